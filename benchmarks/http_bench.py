"""Requests/s of prefork's HTTP worker against uvicorn (h11 and httptools), one worker each.

    python benchmarks/http_bench.py [--rounds 3] [--duration 5] [--connections 50] [--tls]

Every server serves examples/hello.py on a port the OS picks; wrk (keep-alive) runs against
each in turn, alternating over several rounds in one run so that machine noise hits all of
them alike. Prints the median requests/s per server and the ratios against uvicorn h11.
Needs wrk (apt-get install wrk); optional peers are skipped when not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _proc import free_port

ROOT = Path(__file__).resolve().parent.parent
APP = "examples.hello:app"


def servers(port_of: dict[str, int], tls: list[str] | None = None) -> dict[str, list[str]]:
    """The command of each server; with ``tls`` ([certfile, keyfile]), serving HTTPS."""
    py = sys.executable
    out = {
        "prefork": [
            py, "-m", "prefork", "serve", "--workers", "1", "--log-level", "warning",
            "--bind", f"127.0.0.1:{port_of['prefork']}", APP,
        ],
        "uvicorn-h11": [
            py, "-m", "uvicorn", "--http", "h11", "--loop", "uvloop", "--no-access-log",
            "--port", str(port_of["uvicorn-h11"]), APP,
        ],
        "uvicorn-httptools": [
            py, "-m", "uvicorn", "--http", "httptools", "--loop", "uvloop", "--no-access-log",
            "--port", str(port_of["uvicorn-httptools"]), APP,
        ],
    }  # fmt: skip
    if tls:
        certfile, keyfile = tls
        for cmd in out.values():
            cmd[-1:-1] = ["--ssl-certfile", certfile, "--ssl-keyfile", keyfile]
        return out  # gunicorn's asgi worker is left out of the TLS comparison
    if importlib.util.find_spec("gunicorn") is not None and "gunicorn-asgi" in port_of:
        # gunicorn's own ASGI worker (gunicorn >= 25), on uvloop, without an access log.
        out["gunicorn-asgi"] = [
            py, "-m", "gunicorn", "-w", "1", "-k", "asgi", "--asgi-loop", "uvloop",
            "-b", f"127.0.0.1:{port_of['gunicorn-asgi']}", APP,
        ]  # fmt: skip
    return out


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start in {timeout} s")


def run_wrk(port: int, args: argparse.Namespace, duration: float) -> float:
    scheme = "https" if args.tls else "http"
    cmd = [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{max(1, round(duration))}s",
        f"{scheme}://127.0.0.1:{port}/",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print(f"    wrk reported: {errors.group(0)}", file=sys.stderr)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="servers to run (default: all found)")
    parser.add_argument(
        "--tls", action="store_true", help="HTTPS, every server with the same certificate"
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("install wrk: apt-get install wrk", file=sys.stderr)
        return 2
    names = ["prefork", "uvicorn-h11", "uvicorn-httptools", "gunicorn-asgi"]
    port_of = {name: free_port() for name in names}
    tls = None
    if args.tls:
        import tempfile

        import trustme  # in the test extra

        where = Path(tempfile.mkdtemp())
        cert = trustme.CA().issue_cert("127.0.0.1")
        cert.private_key_pem.write_to_path(str(where / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(where / "cert.pem"))
        tls = [str(where / "cert.pem"), str(where / "key.pem")]
    commands = servers(port_of, tls)
    if args.only:
        commands = {k: v for k, v in commands.items() if k in args.only}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    results: dict[str, list[float]] = {name: [] for name in commands}
    try:
        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        for name in commands:
            wait_listening(port_of[name], procs[name])
            run_wrk(port_of[name], args, 1.0)  # warm up
        order = list(commands)
        for round_no in range(args.rounds):
            for name in order if round_no % 2 == 0 else reversed(order):
                rps = run_wrk(port_of[name], args, args.duration)
                results[name].append(rps)
                print(f"round {round_no + 1}: {name:18} {rps:10.0f} req/s", flush=True)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print()
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        runs = ", ".join(f"{v:.0f}" for v in results[name])
        print(f"{name:18} median {value:10.0f} req/s   ({runs})")
    base = medians.get("uvicorn-h11")
    if base and "prefork" in medians:
        print(f"\nprefork / uvicorn-h11       = {medians['prefork'] / base:.2f}x")
        if "uvicorn-httptools" in medians:
            ratio = medians["prefork"] / medians["uvicorn-httptools"]
            print(f"prefork / uvicorn-httptools = {ratio:.2f}x")
        if "gunicorn-asgi" in medians:
            print(f"gunicorn-asgi / uvicorn-h11 = {medians['gunicorn-asgi'] / base:.2f}x")
            ratio = medians["prefork"] / medians["gunicorn-asgi"]
            print(f"prefork / gunicorn-asgi     = {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Instructions the HTTP worker executes per request, counted by valgrind (callgrind).

    python benchmarks/http_instructions.py [--base DIR] [--keep-alive] [--requests 4000]

``prefork serve -w 1`` runs under ``valgrind --tool=callgrind``, which counts every
user-space instruction its processes execute (the kernel's are not counted); 16 client
threads send ``--requests`` hello requests, each on a connection of its own (``Connection:
close``, the default) or 250 per connection (``--keep-alive``); then the server stops and the
worker's total is read. The same run with a fifth of the requests gives the start-up's share:
per request = (total(N) - total(N/5)) / (4N/5).

Unlike requests/s on a shared machine, which moves by several percent between runs, the
count moves by about 1% (the hash seed fixed; what is left is how many connections a wake-up
of the worker finds): a change of about a thousand instructions per request shows. It says
nothing of system calls or of the kernel's work (their count, not their cost, is in ``strace
-c``). Needs valgrind (``apt-get install valgrind``); a run takes a minute or two. ``--base
DIR`` counts another checkout too (e.g. ``git worktree add DIR REV``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _proc import free_port

HERE = Path(__file__).resolve().parent.parent
CLIENTS = 16
PER_CONNECTION = 250  # requests per connection with --keep-alive

APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
"""


def _requests(port: int, count: int, keep_alive: bool) -> None:
    """Send ``count`` requests, each answered before the next."""
    head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    request = head + (b"\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    per = PER_CONNECTION if keep_alive else 1
    sent = 0
    while sent < count:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for _ in range(min(per, count - sent)):
                sock.sendall(request)
                data = b""
                while not data.endswith(b"Hello, world!"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("the server closed before its answer")
                    data += chunk
                sent += 1


def _worker_instructions(out: Path, master: int) -> int:
    """The largest total among the dumps of processes other than the master: the worker's
    (a dump holds what the process executed since it started, before its fork too)."""
    best = 0
    for dump in out.glob("cg.*"):
        if dump.suffix == f".{master}":
            continue
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith(("totals:", "summary:")):
                best = max(best, int(line.split()[1]))
                break
    return best


def count(tree: Path, requests: int, keep_alive: bool) -> int:
    """The worker's instructions for ``requests`` requests, start-up included."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "countapp.py").write_text(APP)
        port = free_port()
        # A fixed hash seed: dict and set layouts, and so their probes, the same every run.
        env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{out}", PYTHONHASHSEED="0")
        proc = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}/cg.%p",
                sys.executable,
                "-m",
                "prefork",
                "serve",
                "countapp:app",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--log-level",
                "warning",
                "--timeout",
                "0",
            ],
            cwd=out,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    _requests(port, 1, keep_alive)
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the server under valgrind did not answer") from None
                    time.sleep(0.5)
            share = [requests // CLIENTS + (i < requests % CLIENTS) for i in range(CLIENTS)]
            with ThreadPoolExecutor(CLIENTS) as pool:
                list(pool.map(lambda n: _requests(port, n, keep_alive), share))
            proc.send_signal(signal.SIGINT)
            proc.wait(120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return _worker_instructions(out, proc.pid)


def per_request(tree: Path, requests: int, keep_alive: bool) -> float:
    few = requests // 5
    return (count(tree, requests, keep_alive) - count(tree, few, keep_alive)) / (requests - few)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="another checkout to count too")
    parser.add_argument("--keep-alive", action="store_true", help="250 requests a connection")
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    mode = "keep-alive" if args.keep_alive else "Connection: close"
    trees = [("this tree", HERE)] + ([("base", args.base.resolve())] if args.base else [])
    results = {}
    for name, tree in trees:
        results[name] = per_request(tree, args.requests, args.keep_alive)
        print(f"{name}: {results[name]:,.0f} instructions per request ({mode})", flush=True)
    if args.base:
        change = results["this tree"] / results["base"] - 1
        print(f"this tree / base: {change:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

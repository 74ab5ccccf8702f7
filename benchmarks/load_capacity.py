"""`prefork load`'s capacity beside wrk's (issue 23 item 8): requests per CPU second of the
generator, which a busy machine does not change the way it changes requests/s.

    python benchmarks/load_capacity.py [--rounds 3] [-d SECONDS] [-c CONNECTIONS]
                                       [--base DIR] [--open RATE]

The server is nginx (Debian's nginx-light; apt-get install nginx-light), one worker, no
access log, answering every request with a fixed 2-byte 200 from memory, so the server costs
as little as a server can; without nginx, the asyncio hello server of load_vs_wrk.py (then
the server may be the bottleneck, which only lowers requests/s, not requests per CPU second).
The server runs on the first CPU, every generator on the second (``taskset -c``), each with
the same connections (-c, 64) and duration (-d, 10 s):

    wrk-t1            wrk -t1
    wrk-t2            wrk -t2
    prefork-w1        prefork load -w1 (closed loop, as wrk)
    prefork-w2        prefork load -w2
    prefork-base-w1   prefork load -w1 from the source tree DIR (--base; an A/B in one run:
                      `git archive main prefork | tar -x -C DIR`)
    prefork-open      prefork load -w1 --rate RATE (--open; the open loop: a rate, not a
                      capacity, so its row is CPU per request at that rate)

The generators take turns over --rounds rounds, the order reversed every other round, so that
machine noise hits them alike. A generator's CPU is user + system time of its whole process
tree (``os.wait4`` of the process started: a prefork load master waits for its workers, so
their time is in its figure), start-up included; its requests are the responses it counted.
Prints, as medians over the rounds: requests/s, the generator's CPU (share of one CPU),
requests per CPU second, and that figure over wrk -t1's and over wrk's with as many threads as
the generator has workers (the ratio of medians); the server's CPU, as a check (near 100% means
the server, not the generator, set requests/s); and, for prefork load, its start-up CPU (a
50 ms run after each measured one: the interpreter, the imports, the fork) and its requests
per CPU second without it (wrk's start-up is a few milliseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _proc import cpu_seconds, free_port
from load_vs_wrk import SERVER

ROOT = Path(__file__).resolve().parent.parent

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir};
    proxy_temp_path {dir};
    fastcgi_temp_path {dir};
    uwsgi_temp_path {dir};
    scgi_temp_path {dir};
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok"; }}
    }}
}}
"""


@dataclass
class Run:
    requests: int
    seconds: float  # wall-clock time of the generator, start-up included
    duration: float  # the run's own duration, as the generator reports it
    cpu: float  # user + system seconds of the generator's process tree
    server_cpu: float  # CPU seconds the server used meanwhile

    @property
    def rps(self) -> float:
        return self.requests / self.duration

    @property
    def per_cpu(self) -> float:
        return self.requests / self.cpu


def start_server(workdir: Path, cpu: str | None) -> tuple[subprocess.Popen[bytes], int, str]:
    """nginx (or the asyncio hello server) on a free port, pinned; (process, port, name)."""
    port = free_port()
    pin = ["taskset", "-c", cpu] if cpu else []
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx:
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=workdir, port=port))
        argv = [*pin, nginx, "-c", str(conf), "-e", str(workdir / "error.log")]
        name = "nginx"
    else:
        argv = [*pin, sys.executable, "-c", SERVER, "hello", str(port)]
        name = "asyncio hello (nginx not installed)"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited with {proc.returncode}")
        try:
            out = subprocess.run(
                ["curl", "-s", f"http://127.0.0.1:{port}/"], capture_output=True, timeout=2
            )
        except FileNotFoundError:  # no curl: trust a short wait
            time.sleep(1)
            break
        if out.stdout == b"ok":
            break
        time.sleep(0.05)
    return proc, port, name


def server_cpu(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds of the server and its children (nginx's worker) so far."""
    total = cpu_seconds(proc.pid)
    kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return total + sum(cpu_seconds(int(p)) for p in kids)


def run_generator(
    argv: list[str], env: dict[str, str], server: subprocess.Popen[bytes]
) -> tuple[str, float, float, float]:
    """Run ``argv`` to its end; (its stdout, wall seconds, CPU seconds of its process tree,
    the server's CPU seconds meanwhile)."""
    before = server_cpu(server)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        # Not from this directory: ``python -m`` puts the working directory first on sys.path,
        # ahead of PYTHONPATH, and the repository's own prefork would shadow --base's.
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=tempfile.gettempdir())
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        used = server_cpu(server) - before
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:6]} exited {proc.returncode}: {errors[-500:]}")
    return text, seconds, usage.ru_utime + usage.ru_stime, used


def wrk(
    threads: int, url: str, c: int, d: int, cpu: str | None, server: subprocess.Popen[bytes]
) -> Run:
    pin = ["taskset", "-c", cpu] if cpu else []
    argv = [*pin, "wrk", f"-t{threads}", f"-c{c}", f"-d{d}s", url]
    text, seconds, used, server_used = run_generator(argv, dict(os.environ), server)
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise RuntimeError(f"no request count in wrk's output: {text[-300:]}")
    duration = float(m[2]) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m[3]]
    if "Non-2xx" in text or "Socket errors" in text:
        print(f"    wrk: {text.strip().splitlines()[-3:]}", file=sys.stderr)
    return Run(int(m[1]), seconds, duration, used, server_used)


def prefork_load(
    workers: int,
    url: str,
    c: int,
    d: str,
    cpu: str | None,
    server: subprocess.Popen[bytes],
    tree: Path,
    rate: float | None = None,
) -> Run:
    pin = ["taskset", "-c", cpu] if cpu else []
    argv = [*pin, sys.executable, "-m", "prefork", "load", url, f"-c{c}", f"-d{d}"]
    argv += [f"-w{workers}", "--json"]
    if rate is not None:
        argv += ["--rate", f"{rate:g}"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    text, seconds, used, server_used = run_generator(argv, env, server)
    doc = json.loads(text.strip().splitlines()[-1])
    if sum(doc["errors"].values()):
        print(f"    prefork load: errors {doc['errors']}", file=sys.stderr)
    return Run(doc["answered"], seconds, doc["duration_s"], used, server_used)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-d", type=int, default=10, help="seconds per run (10)")
    parser.add_argument("-c", type=int, default=64, help="connections (64)")
    parser.add_argument("--base", type=Path, help="a source tree to A/B against (its prefork/)")
    parser.add_argument("--open", type=float, help="also the open loop at this rate")
    parser.add_argument("--only", nargs="+", help="generators to run (names as above)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    cpus = sorted(os.sched_getaffinity(0))[:2]
    server_pin = str(cpus[0]) if len(cpus) == 2 and shutil.which("taskset") else None
    load_pin = str(cpus[1]) if server_pin else None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="load-capacity-") as tmp:
        server, port, server_name = start_server(Path(tmp), server_pin)
        url = f"http://127.0.0.1:{port}/"
        c, d = args.c, args.d
        wrks: dict[str, Callable[[], Run]] = {
            "wrk-t1": lambda: wrk(1, url, c, d, load_pin, server),
            "wrk-t2": lambda: wrk(2, url, c, d, load_pin, server),
        }
        # Each prefork generator: its tree, workers and rate; run for a duration.
        loads: dict[str, tuple[Path, int, float | None]] = {
            "prefork-w1": (ROOT, 1, None),
            "prefork-w2": (ROOT, 2, None),
        }
        if args.base is not None:
            base = args.base.resolve()
            if not (base / "prefork" / "__init__.py").exists():
                sys.exit(
                    f"--base {base} has no prefork/ (git archive main prefork | tar -x -C DIR)"
                )
            loads["prefork-base-w1"] = (base, 1, None)
        if args.open is not None:
            loads["prefork-open"] = (ROOT, 1, args.open)
            if args.base is not None:
                loads["prefork-base-open"] = (base, 1, args.open)

        def load(name: str, duration: str) -> Run:
            tree, workers, rate = loads[name]
            return prefork_load(workers, url, c, duration, load_pin, server, tree, rate)

        names = [*wrks, *loads]
        if args.only:
            unknown = set(args.only) - set(names)
            if unknown:
                sys.exit(f"unknown generators {sorted(unknown)}; known: {names}")
            names = [name for name in names if name in args.only]
        runs: dict[str, list[Run]] = {name: [] for name in names}
        startup: dict[str, list[float]] = {name: [] for name in names if name in loads}
        try:
            for name in names:  # a warm-up (nginx's first connections, the page cache)
                wrks[name]() if name in wrks else load(name, "1s")
            for round_no in range(args.rounds):
                order = names if round_no % 2 == 0 else names[::-1]
                for name in order:
                    run = wrks[name]() if name in wrks else load(name, f"{d}s")
                    runs[name].append(run)
                    print(
                        f"round {round_no + 1}: {name}: {run.rps:,.0f} req/s, "
                        f"{run.cpu / run.seconds:.0%} CPU, {run.per_cpu:,.0f} req/CPU-s, "
                        f"server {run.server_cpu / run.seconds:.0%}",
                        flush=True,
                    )
                    if name in startup:  # what a run costs before and after its load
                        startup[name].append(load(name, "50ms").cpu)
        finally:
            server.terminate()
            server.wait(10)
    med = {
        name: (
            statistics.median(r.rps for r in rs),
            statistics.median(r.cpu / r.seconds for r in rs),
            statistics.median(r.per_cpu for r in rs),
            statistics.median(r.server_cpu / r.seconds for r in rs),
        )
        for name, rs in runs.items()
    }
    steady = {
        name: statistics.median(
            r.requests / max(r.cpu - statistics.median(startup[name]), 1e-9) for r in runs[name]
        )
        for name in startup
    }
    print()
    print(f"server: {server_name}, pinned to CPU {server_pin}; generators on CPU {load_pin}")
    print(f"-c {c}, -d {d}s, {args.rounds} rounds, medians; load average {os.getloadavg()[0]:.2f}")
    print()
    print(
        "| generator | req/s | generator CPU | req per CPU-second | vs wrk -t1 | vs wrk, as many "
        "threads | server CPU | start-up CPU | req per CPU-second after start-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (rps, cpu, per_cpu, srv) in med.items():
        t1 = med.get("wrk-t1", (0, 0, 0, 0))[2]
        same = med.get("wrk-t2" if name.endswith("w2") else "wrk-t1", (0, 0, 0, 0))[2]
        vs_t1 = f"{per_cpu / t1:.2f}x" if t1 else "-"
        vs_same = f"{per_cpu / same:.2f}x" if same and "open" not in name else "-"
        first = f"{statistics.median(startup[name]):.2f} s" if name in startup else "-"
        after = f"{steady[name]:,.0f}" if name in steady else "-"
        print(
            f"| {name} | {rps:,.0f} | {cpu:.0%} | {per_cpu:,.0f} | {vs_t1} | {vs_same} | "
            f"{srv:.0%} | {first} | {after} |"
        )
    print(f"\n(took {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()

"""`prefork serve` in operation: requests lost across reloads, memory, and load spread.

    python benchmarks/serve_reload.py [--workers 2] [--reloads 3] [--threads 4] [--duration 5]

Starts real masters (``python -m prefork serve --app-dir examples hello:app``) on 127.0.0.1
ports the OS picks, and prints:

1. requests lost across N SIGHUPs under load (each SIGHUP sent once the previous reload has
   finished, i.e. every worker pid was replaced):
   - with Python http.client keep-alive clients that retry an idempotent request once when a
     reused connection was closed before any response byte (RFC 9112 section 9.3.1), as HTTP
     clients do: sent / answered / failed / retried;
   - with wrk (if installed), which never retries: its "Socket errors" and "Non-2xx" counts
     are printed for the record (a connection closed under a sent request shows up there).
2. RSS (VmRSS) and PSS (shared pages split between the processes) of the master and of
   idle workers, after startup and a few requests.
3. How evenly a keep-alive load spreads over the workers: the share of CPU time each worker
   used under wrk (-w 2 and -w 4), and the share of requests each worker answered to Python
   keep-alive clients (an app answering its pid).

wrk comes from Debian's ``wrk`` package (apt-get install wrk); without it the wrk parts are
skipped. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from _proc import children, cpu_seconds, memory_kib
from _served import Served, wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
PID_APP = """
import os

BODY = str(os.getpid()).encode()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(BODY))]})
    await send({"type": "http.response.body", "body": BODY})
"""


# --- a master ----------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(app: str, app_dir: Path, workers: int, logdir: Path) -> Iterator[Served]:
    server = Served(app, app_dir, logdir, workers=workers)
    try:
        yield server
    finally:
        server.stop()


# --- clients -----------------------------------------------------------------------------------


class Client(threading.Thread):
    """Keep-alive GETs back to back, with the RFC 9112 9.3.1 retry rule."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stopped = threading.Event()
        self.sent = self.answered = self.retried = 0
        self.failed: list[str] = []
        self.bodies: Counter[bytes] = Counter()
        self.conn: http.client.HTTPConnection | None = None

    def once(self) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            self.conn.request("GET", "/")
            response = self.conn.getresponse()
            return response.status, response.read()
        except BaseException:
            self.conn.close()
            self.conn = None
            raise

    def run(self) -> None:
        while not self.stopped.is_set():
            reused = self.conn is not None and self.conn.sock is not None
            self.sent += 1
            try:
                try:
                    status, body = self.once()
                except RETRYABLE:
                    if not reused:
                        raise
                    self.retried += 1
                    status, body = self.once()
            except Exception as exc:
                self.failed.append(repr(exc))
                continue
            if status != 200:
                self.failed.append(f"status {status}")
                continue
            self.answered += 1
            self.bodies[body] += 1
        if self.conn is not None:
            self.conn.close()


@contextlib.contextmanager
def clients(port: int, n: int) -> Iterator[list[Client]]:
    running = [Client(port) for _ in range(n)]
    for c in running:
        c.start()
    try:
        yield running
    finally:
        for c in running:
            c.stopped.set()
        for c in running:
            c.join(15)


def wrk(port: int, seconds: int, connections: int = 50, threads: int = 2) -> subprocess.Popen[str]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_summary(out: str) -> str:
    requests = re.search(r"(\d+) requests in ([\d.]+\w+)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    sock_errors = re.search(r"Socket errors: (.*)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    parts = [
        f"{requests.group(1)} requests in {requests.group(2)}" if requests else "? requests",
        f"{rate.group(1)} req/s" if rate else "",
        f"socket errors: {sock_errors.group(1) if sock_errors else 'none'}",
        f"non-2xx: {non_2xx.group(1) if non_2xx else 0}",
    ]
    return ", ".join(p for p in parts if p)


# --- the measurements --------------------------------------------------------------------------


def reload_loss(args: argparse.Namespace, logdir: Path) -> None:
    print(f"\n== 1. requests lost across {args.reloads} SIGHUPs under load (-w {args.workers})")
    with serving("hello:app", EXAMPLES, args.workers, logdir) as server:
        with clients(server.port, args.threads) as running:
            wait_until(lambda: sum(c.answered for c in running) >= 500, 30, "warm-up")
            took = []
            for _ in range(args.reloads):
                time.sleep(args.gap)  # load between reloads
                took.append(server.reload())
            time.sleep(args.gap)
        sent = sum(c.sent for c in running)
        answered = sum(c.answered for c in running)
        retried = sum(c.retried for c in running)
        failed = [f for c in running for f in c.failed]
        print(
            f"http.client x{args.threads} keep-alive (9.3.1 retry): sent {sent}, "
            f"answered {answered}, failed {len(failed)}, retried {retried}; "
            f"reloads took {', '.join(f'{t * 1000:.0f} ms' for t in took)}"
        )
        for f in failed[:5]:
            print("  failure:", f)
        if shutil.which("wrk") is None:
            print("wrk: not installed (apt-get install wrk); skipped")
            return
        seconds = max(3, round(args.reloads * (args.gap + 0.5) + 2))
        run = wrk(server.port, seconds)
        time.sleep(1.0)
        for _ in range(args.reloads):
            server.reload()
            time.sleep(args.gap)
        out, _ = run.communicate(timeout=seconds + 30)
        print(f"wrk -c50 (no retries) across {args.reloads} SIGHUPs: {wrk_summary(out)}")
        run = wrk(server.port, seconds)
        out, _ = run.communicate(timeout=seconds + 30)
        print(f"wrk -c50 same length, no reload (baseline): {wrk_summary(out)}")


def memory(args: argparse.Namespace, logdir: Path) -> None:
    print(f"\n== 2. memory (-w {args.workers}, hello:app, after startup and 100 requests)")
    with serving("hello:app", EXAMPLES, args.workers, logdir) as server:
        for _ in range(100):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
        time.sleep(0.5)  # let the workers go idle
        rss, pss = memory_kib(server.pid)
        print(f"master  pid {server.pid}: VmRSS {rss / 1024:.1f} MiB, Pss {pss / 1024:.1f} MiB")
        for pid in sorted(children(server.pid)):
            rss, pss = memory_kib(pid)
            print(f"worker  pid {pid}: VmRSS {rss / 1024:.1f} MiB, Pss {pss / 1024:.1f} MiB")


def spread(args: argparse.Namespace, logdir: Path) -> None:
    print("\n== 3. load spread across workers (keep-alive)")
    have_wrk = shutil.which("wrk") is not None
    app_dir = logdir / "pidapp"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "pidapp.py").write_text(PID_APP)
    for workers in (2, 4):
        if have_wrk:
            with serving("hello:app", EXAMPLES, workers, logdir) as server:
                pids = sorted(children(server.pid))
                before = {pid: cpu_seconds(pid) for pid in pids}
                run = wrk(server.port, args.duration)
                out, _ = run.communicate(timeout=args.duration + 30)
                used = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
                whole = sum(used.values()) or 1.0
                shares = ", ".join(f"{used[p] / whole:.1%}" for p in pids)
                print(f"-w {workers}, wrk -c50 {args.duration}s, CPU share per worker: {shares}")
                print(f"    ({wrk_summary(out)})")
        with serving("pidapp:app", app_dir, workers, logdir) as server:
            with clients(server.port, 8) as running:
                time.sleep(args.duration)
            counts: Counter[bytes] = Counter()
            for c in running:
                counts.update(c.bodies)
            whole = sum(counts.values()) or 1
            shares = ", ".join(f"{n / whole:.1%}" for _, n in sorted(counts.items()))
            connections = Counter(max(c.bodies, key=c.bodies.__getitem__) for c in running)
            print(
                f"-w {workers}, 8 http.client keep-alive clients {args.duration}s: "
                f"{whole} requests, share per worker: {shares}; "
                f"connections per worker: {sorted(connections.values(), reverse=True)}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="workers for parts 1 and 2")
    parser.add_argument("--reloads", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="http.client load threads")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds of load between reloads")
    parser.add_argument("--duration", type=int, default=5, help="seconds per spread run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prefork-bench-") as tmp:
        logdir = Path(tmp)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, wrk: {shutil.which('wrk')}")
        reload_loss(args, logdir)
        memory(args, logdir)
        spread(args, logdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

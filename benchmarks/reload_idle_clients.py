"""Requests lost across SIGHUP reloads by keep-alive clients that pause and never retry.

    python benchmarks/reload_idle_clients.py [--workers 2] [--clients 20] [--reloads 20]
                                             [--pause 1.0]

Starts ``python -m prefork serve -w 2 --app-dir examples hello:app`` on a 127.0.0.1 port the
OS picks (default options: keep-alive 5 s). Each client is a thread with one Python
http.client keep-alive connection; it sends a GET, reads the answer, sleeps a random 0 to
``--pause`` seconds, and again. A request that fails (any exception, or a status other than
200) is counted and never retried; the next one opens a new connection. A response with
``Connection: close`` makes http.client open a new connection for the next request, which is
no failure.

Two phases of the same length, with the same clients:

1. steady state: no reload (what keep-alive expiry alone costs; with pauses below the
   keep-alive timeout, nothing);
2. ``--reloads`` SIGHUPs, each sent once the previous reload is done and every old worker
   has exited.

The code under test is whatever ``python -m prefork`` imports: set PYTHONPATH to another
checkout (e.g. ``git archive <commit> | tar -x -C /tmp/base``) to measure it instead.
"""

from __future__ import annotations

import argparse
import http.client
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from _served import Served

import prefork

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class Client(threading.Thread):
    """Keep-alive GETs with random pauses; failures are counted, never retried."""

    def __init__(self, port: int, pause: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.pause = pause
        self.rng = random.Random(seed)
        self.stopped = threading.Event()
        self.sent = self.answered = 0
        self.failed: Counter[str] = Counter()
        self.conn: http.client.HTTPConnection | None = None

    def once(self) -> None:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.sent += 1
        try:
            self.conn.request("GET", "/")
            response = self.conn.getresponse()
            body = response.read()
        except Exception as exc:
            self.failed[type(exc).__name__] += 1
            self.conn.close()
            self.conn = None
            return
        if response.status != 200 or body != b"Hello, world!\n":
            self.failed[f"status {response.status}"] += 1
        else:
            self.answered += 1

    def run(self) -> None:
        while not self.stopped.is_set():
            self.once()
            self.stopped.wait(self.rng.uniform(0.0, self.pause))
        if self.conn is not None:
            self.conn.close()

    def counts(self) -> Counts:
        return self.sent, self.answered, self.failed.copy()


def totals(clients: list[Client]) -> Counts:
    sent = answered = 0
    failed: Counter[str] = Counter()
    for c in clients:
        s, a, f = c.counts()
        sent, answered = sent + s, answered + a
        failed.update(f)
    return sent, answered, failed


Counts = tuple[int, int, Counter[str]]


def report(what: str, before: Counts, after: Counts) -> None:
    sent, answered = after[0] - before[0], after[1] - before[1]
    failed = after[2] - before[2]
    kinds = ", ".join(f"{k} x{n}" for k, n in failed.most_common()) or "none"
    print(f"{what}: sent {sent}, answered {answered}, failed {sum(failed.values())} ({kinds})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--pause", type=float, default=1.0, help="most seconds between requests")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"prefork from {Path(prefork.__file__).parent.parent}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="prefork-reload-") as tmp:
        server = Served("hello:app", EXAMPLES, Path(tmp), workers=args.workers)
        try:
            clients = [
                Client(server.port, args.pause, args.seed * 1000 + i) for i in range(args.clients)
            ]
            for c in clients:
                c.start()
            time.sleep(2.0)  # every client has a connection
            began = time.monotonic()
            start = totals(clients)
            took = [server.reload() for _ in range(args.reloads)]
            time.sleep(2.0)  # the last old workers' connections have moved on
            reloading = time.monotonic() - began
            during = totals(clients)
            time.sleep(reloading)
            steady = totals(clients)
            for c in clients:
                c.stopped.set()
            for c in clients:
                c.join(15)
        finally:
            server.stop()
    print(
        f"-w {args.workers}, {args.clients} clients pausing 0-{args.pause:g} s, "
        f"{reloading:.1f} s per phase; reloads took "
        f"{min(took):.2f}-{max(took):.2f} s"
    )
    report(f"{args.reloads} reloads", start, during)
    report("steady state, no reload", during, steady)
    return 0


if __name__ == "__main__":
    sys.exit(main())

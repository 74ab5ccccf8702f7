"""CPU microseconds the HTTP worker spends on one keep-alive request, in process.

    python benchmarks/http_request_cost.py [--base DIR] [--rounds 4] [--requests 32000]

64 connections of ``HTTPProtocol`` on transports that only count writes (no sockets, no
system calls, no load generator), each fed wrk's hello request in turn, answered by a
13-byte ASGI hello; the loop runs between batches so the apps' tasks run. Two cases:

- ``same``: every request has the same head, as wrk, a health check or a poller sends it
  (the worker's head memo then reads it once: ``prefork.http._parse.MEMO_HEADS``);
- ``distinct``: every request differs (997 paths, more than the memo holds).

CPU time (``time.process_time``) per request, best of ``--rounds`` runs, each run in a fresh
process. ``--base DIR`` measures another checkout too (e.g. ``git archive REV prefork | tar
-x -C DIR``), alternated with this one, so that both see the same machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

MEASURE = r"""
import asyncio, sys, time, uvloop
from prefork.http._config import HTTPConfig
from prefork.http._connection import HTTPProtocol
from prefork.http._state import ServerState

class Transport:
    def __init__(self): self.writes = 0; self.closing = False
    def write(self, data): self.writes += 1
    def is_closing(self): return self.closing
    def get_extra_info(self, name, default=None): return ("127.0.0.1", 8000)
    def pause_reading(self): pass
    def resume_reading(self): pass
    def close(self): self.closing = True
    def set_write_buffer_limits(self, *a, **k): pass
    def get_write_buffer_size(self): return 0

HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": list(HEADERS)})
    await send({"type": "http.response.body", "body": b"Hello, world!"})

def head(path):
    return (b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n"
            b"Accept: */*\r\n\r\n" % path)

async def main(case, n):
    loop = asyncio.get_running_loop()
    state = ServerState(HTTPConfig(app="x:app", access_log=False), app, loop)
    conns = []
    for _ in range(64):
        proto, transport = HTTPProtocol(state), Transport()
        proto.connection_made(transport)
        conns.append((proto, transport))
    heads = [head(b"/")] if case == "same" else [head(b"/item/%d" % k) for k in range(997)]
    batches, k = n // 64, 0
    start = time.process_time()
    for _ in range(batches):
        for proto, _ in conns:
            proto.data_received(heads[k % len(heads)])
            k += 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    spent = time.process_time() - start
    assert sum(t.writes for _, t in conns) == batches * 64, "a request was not answered"
    print(spent / (batches * 64) * 1e6)

uvloop.run(main(sys.argv[1], int(sys.argv[2])))
"""


def measure(tree: Path, case: str, requests: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, case, str(requests)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="another checkout (its prefork/ directory)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=32000)
    args = parser.parse_args()
    trees = {"this checkout": HERE}
    if args.base is not None:
        trees = {f"base ({args.base})": args.base.resolve(), **trees}
    best: dict[tuple[str, str], float] = {}
    for round_ in range(args.rounds):
        order = list(trees.items()) if round_ % 2 == 0 else list(trees.items())[::-1]
        for name, tree in order:
            for case in ("same", "distinct"):
                us = measure(tree, case, args.requests)
                best[name, case] = min(us, best.get((name, case), us))
    print("| tree | same head (us/request) | distinct heads (us/request) |")
    print("| --- | --: | --: |")
    for name in trees:
        print(f"| {name} | {best[name, 'same']:.2f} | {best[name, 'distinct']:.2f} |")


if __name__ == "__main__":
    main()

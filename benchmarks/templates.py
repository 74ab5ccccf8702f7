"""Templates (issue 21): memory and kill -9 recovery of a heavy app, against its peers.

    python benchmarks/templates.py [--workers 4] [--rounds 3] [--only NAME ...]

Serves examples/heavy_app.py (imports for about 1.5 s, holds about 150 MB of objects) with N
workers from each server in turn, on a 127.0.0.1 port the OS picks:

    prefork             prefork serve (each worker imports the app after its fork)
    prefork-template    prefork serve --template (workers fork from a template that imported it)
    gunicorn-preload    gunicorn -k uvicorn's worker --preload (the master imports it)
    uvicorn             uvicorn --workers N (each worker is spawned: a fresh interpreter)
    prefork-refork      prefork serve --template --refork-after 100 (measured once a worker
                        served 100 requests and the broker rolled onto the template it forked)

With ``--warm N`` the app builds N more objects on each process's first request (a cache that
traffic warms: ``HEAVY_WARM_OBJECTS``), which only ``--refork-after`` shares.

and prints, for each: the total PSS (proportional set size: shared pages split between the
processes sharing them) of the master and every process under it once 200 requests were
answered, that total over one prefork worker's PSS without templates, and the milliseconds
from a kill -9 of every worker to the first answer from a new one (the median over the
rounds). A server that is not installed is skipped and said so (pip install -e '.[bench]').
Not a test: a measurement, on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _peers import command, missing
from _proc import children, free_port, memory_kib, stop_session

ROOT = Path(__file__).resolve().parent.parent
APP = "examples.heavy_app:app"
SERVERS = {
    "prefork": ("prefork", ()),
    "prefork-template": ("prefork", ("--template",)),
    "gunicorn-preload": ("gunicorn-uvicorn", ("--preload",)),
    "uvicorn": ("uvicorn-h11", ()),
    "prefork-refork": ("prefork", ("--template", "--refork-after", "100")),
}


def answer(port: int) -> str | None:
    """The pid that answered, or None."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        return response.read().decode() if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def tree(pid: int) -> set[int]:
    found = children(pid)
    for child in list(found):
        found |= tree(child)
    return found


def pss_mib(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += memory_kib(pid)[1]
    return total / 1024


def workers_of(pid: int, answering: set[str]) -> set[int]:
    """The processes under the server that answered requests (not a template, a spare)."""
    return {p for p in tree(pid) if str(p) in answering}


def measure(name: str, workers: int, rounds: int) -> tuple[float, list[float]]:
    """(total PSS in MiB, kill -9 of every worker to the first answer, ms per round)."""
    peer, extra = SERVERS[name]
    port = free_port()
    argv = command(peer, port, workers, APP, extra)
    proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while answer(port) is None:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{name} did not answer")
            time.sleep(0.05)
        seen: set[str] = set()
        while len(seen) < workers and time.monotonic() < deadline:
            seen |= {a for a in (answer(port) for _ in range(50)) if a is not None}
        if "--refork-after" in extra:
            seen = reforked(proc.pid, port, workers, deadline)
        time.sleep(1)
        total = pss_mib({proc.pid} | tree(proc.pid))
        times = []
        for _ in range(rounds):
            victims = workers_of(proc.pid, seen)
            began = time.monotonic()
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            while (got := answer(port)) is None or int(got) in victims:
                if time.monotonic() - began > 60:
                    raise RuntimeError(f"{name} did not answer after the kill")
                time.sleep(0.001)
            times.append(1000 * (time.monotonic() - began))
            seen = set()
            while len(seen) < workers and time.monotonic() - began < 60:
                seen |= {a for a in (answer(port) for _ in range(50)) if a is not None}
            time.sleep(2.5)  # a kill storm's rate cap is not what this measures
        return total, times
    finally:
        stop_session(proc)


def reforked(pid: int, port: int, workers: int, deadline: float) -> set[str]:
    """Send requests until ``workers`` workers of generation 2 (forked from the template a
    worker forked: the one refork) answered; returns their pids."""
    seen: set[str] = set()
    while len(seen) < workers:
        if time.monotonic() > deadline + 60:
            raise RuntimeError("no refork happened")
        answered = {a for a in (answer(port) for _ in range(50)) if a is not None}
        seen = {a for a in seen | answered if titled(int(a), b" gen 2")}
    return seen


def titled(pid: int, what: bytes) -> bool:
    """Whether process ``pid`` has ``what`` in its title."""
    try:
        return what in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=sorted(SERVERS))
    parser.add_argument("--warm", type=int, default=0, metavar="N")
    args = parser.parse_args()
    os.environ["HEAVY_WARM_OBJECTS"] = str(args.warm)  # the servers inherit it
    names = args.only or list(SERVERS)
    one, _ = measure("prefork", 1, 0)  # one worker without templates: master + worker
    print(f"one prefork worker (and its master), no template: {one:.0f} MiB PSS")
    print(f"{'server':18} {'total PSS':>10} {'x one':>6} {'kill -9 all -> answer (ms)':>28}")
    for name in names:
        if why := missing(SERVERS[name][0]):
            print(f"{name:18} skipped: {why}")
            continue
        total, times = measure(name, args.workers, args.rounds)
        spread = "/".join(f"{t:.0f}" for t in times)
        print(
            f"{name:18} {total:8.0f}MiB {total / one:6.2f} "
            f"{statistics.median(times):10.0f} ({spread})",
            flush=True,
        )
    sys.exit(0)


if __name__ == "__main__":
    main()

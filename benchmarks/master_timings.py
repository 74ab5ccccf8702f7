"""Master timings for the closing note of issue 2 (prints, never asserts; not a test).

    python benchmarks/master_timings.py [--kills 20] [--reloads 5] [--workers 4] [--idle 60]
                                        [--backoff-reset 0] [--timeout 30]

1. SIGKILL of a worker -> its replacement ready: the master's ``worker_ready`` callback prints
   a CLOCK_MONOTONIC timestamp (system-wide, so comparable with this process's clock); median
   of ``--kills`` runs. The kills come one after another, so the master runs with
   ``backoff_reset=0`` unless ``--backoff-reset`` says otherwise: with prefork's default (10 s)
   the second kill within 10 s of readiness counts as a crash loop and waits its backoff.
2. A rolling reload of ``--workers`` workers: SIGHUP -> ``reload_done``; median of
   ``--reloads`` runs.
3. The master's CPU time (utime + stime from /proc/<pid>/stat) over ``--idle`` idle seconds,
   with its workers running (they heartbeat every 2 s at the default 30 s timeout; with
   ``--timeout 0`` they do not, and the master should not wake at all).

The master runs in a child process (this script with ``--serve``), started in its own process
group, which is killed at the end whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _proc import cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing


from prefork import Master, Worker  # noqa: E402


class Echo(Worker):
    """A small TCP worker: ready once it listens."""

    async def init(self) -> None:
        self.server = await asyncio.start_server(self.handle, sock=self.sockets[0])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        writer.close()

    async def prepare_for_shutdown(self) -> None:
        self.server.close()
        self.shutdown()


def serve(workers: int, backoff_reset: float, timeout: float) -> int:
    def say(event: str, **fields: Any) -> None:
        print(json.dumps({"e": event, "t": time.monotonic(), **fields}), flush=True)

    master = Master(graceful_timeout=5, backoff_reset=backoff_reset)
    echo = master.broker("echo", Echo, workers=workers, listen=["127.0.0.1:0"], timeout=timeout)
    echo.on("worker_ready", lambda w: say("ready", pid=w.pid))
    echo.on("worker_crash", lambda x: say("crash", pid=x.pid))
    echo.on("worker_exit", lambda x: say("exit", pid=x.pid))
    echo.on("reload_done", lambda r: say("reload_done", replaced=r.replaced))
    echo.on("reload_failed", lambda r: say("reload_failed", reason=r.reason))
    return master.run()


class Served:
    """The master subprocess and the event lines it prints."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.popen = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                str(args.workers),
                "--backoff-reset",
                str(args.backoff_reset),
                "--timeout",
                str(args.timeout),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.live: set[int] = set()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(json.loads(line))

    def next(self, event: str | None, timeout: float = 30.0) -> dict[str, Any]:
        """The next line for ``event`` (any event when None); keeps ``live`` up to date."""
        deadline = time.monotonic() + timeout
        while True:
            e = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if e["e"] == "ready":
                self.live.add(e["pid"])
            elif e["e"] in ("crash", "exit"):
                self.live.discard(e["pid"])
            if event is None or e["e"] == event:
                return e

    def wait_live(self, n: int) -> None:
        while len(self.live) != n:
            self.next(None)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def measure(args: argparse.Namespace) -> None:
    served = Served(args)
    try:
        served.wait_live(args.workers)
        replaced = []
        for _ in range(args.kills):
            victim = min(served.live)
            t0 = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            replaced.append((served.next("ready")["t"] - t0) * 1000)
            served.wait_live(args.workers)
        print(
            f"SIGKILL -> replacement ready: median {statistics.median(replaced):.1f} ms "
            f"(min {min(replaced):.1f}, max {max(replaced):.1f}, n={len(replaced)})"
        )

        reloads = []
        for _ in range(args.reloads):
            t0 = time.monotonic()
            served.popen.send_signal(signal.SIGHUP)
            reloads.append((served.next("reload_done")["t"] - t0) * 1000)
            served.wait_live(args.workers)  # the old generation has left
            time.sleep(0.2)
        print(
            f"rolling reload of {args.workers} workers (SIGHUP -> reload_done): median "
            f"{statistics.median(reloads):.1f} ms (all: {', '.join(f'{r:.0f}' for r in reloads)})"
        )

        time.sleep(1.0)  # let the last reload settle
        before = cpu_seconds(served.popen.pid)
        time.sleep(args.idle)
        used = cpu_seconds(served.popen.pid) - before
        print(
            f"master CPU over {args.idle:g} idle s with {args.workers} workers "
            f"(timeout={args.timeout:g}): "
            f"{used * 1000:.0f} ms ({used / args.idle * 100:.3f}% of one core)"
        )
    finally:
        served.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument(
        "--backoff-reset",
        type=float,
        default=0.0,
        help="the master's backoff_reset: with the default 10 s of prefork, kills less than "
        "10 s after a worker became ready count as a crash loop and back off; 0 (the default "
        "here) measures the plain replacement path",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="the workers' heartbeat timeout (prefork's default 30: a heartbeat every 2 s "
        "from each worker; 0 turns heartbeats off)",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        sys.exit(serve(args.serve, args.backoff_reset, args.timeout))
    measure(args)


if __name__ == "__main__":
    main()

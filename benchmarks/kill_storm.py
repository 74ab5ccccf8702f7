"""A kill -9 storm: how long does the service sit with nothing serving?

    python benchmarks/kill_storm.py [--workers 4] [--interval 0.2] [--duration 20]

Starts ``prefork serve --workers N`` (examples/hello.py) on a 127.0.0.1 port the OS picks,
SIGKILLs a random worker every ``interval`` seconds for ``duration`` seconds (the OOM killer
does this), and meanwhile samples every 10 ms how many workers are alive and whether a new
connection gets an answer. Prints the longest stretch with no live worker, the longest
stretch of failed requests, and how many requests failed. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from _proc import children, free_port

ROOT = Path(__file__).resolve().parent.parent


def answered(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument(
        "--template", action="store_true", help="serve with --template (templates die too)"
    )
    args = parser.parse_args()
    port = free_port()
    master = subprocess.Popen(
        [sys.executable, "-m", "prefork", "serve", "--app-dir", str(ROOT / "examples"),
         "--workers", str(args.workers), "--bind", f"127.0.0.1:{port}",
         "--log-level", "warning", *(["--template"] if args.template else []), "hello:app"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not answered(port):
            if time.monotonic() > deadline:
                raise SystemExit("prefork serve did not answer")
            time.sleep(0.05)
        kills = failed = total = 0
        empty_since = failing_since = None
        longest_empty = longest_failing = 0.0
        start = next_kill = time.monotonic()
        while (now := time.monotonic()) - start < args.duration:
            if now >= next_kill:
                pids = list(children(master.pid))
                if pids:
                    os.kill(random.choice(pids), signal.SIGKILL)
                    kills += 1
                next_kill += args.interval
            live = len(children(master.pid))
            if live == 0 and empty_since is None:
                empty_since = now
            elif live and empty_since is not None:
                longest_empty = max(longest_empty, now - empty_since)
                empty_since = None
            total += 1
            if answered(port):
                if failing_since is not None:
                    longest_failing = max(longest_failing, now - failing_since)
                    failing_since = None
            else:
                failed += 1
                failing_since = failing_since or now
            time.sleep(0.01)
        end = time.monotonic()
        if empty_since is not None:
            longest_empty = max(longest_empty, end - empty_since)
        if failing_since is not None:
            longest_failing = max(longest_failing, end - failing_since)
        print(f"workers={args.workers} kills={kills} every {args.interval}s for {args.duration}s")
        print(f"longest stretch with no live worker: {longest_empty:.2f}s")
        print(f"longest stretch of failed requests:  {longest_failing:.2f}s")
        print(f"requests failed: {failed} of {total}")
    finally:
        master.send_signal(signal.SIGINT)
        try:
            master.wait(10)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()


if __name__ == "__main__":
    main()

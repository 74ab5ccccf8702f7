"""Production timings for the closing note of issue 20 (prints, never asserts; not a test).

    python benchmarks/production_timings.py [--runs 5] [--delay 2] [--reloads 5]

1. SIGTERM -> the master's exit, as PID 1 of a PID namespace (``unshare --pid --fork
   --mount-proc``, as in a container without an init; needs root or user namespaces): idle,
   with a 0.5 s request in flight, and with ``--shutdown-delay DELAY``. Median of ``--runs``.
2. ``--reload``: a save of the app's file -> the new code answering GET / (polled every
   5 ms), with the default ``--reload-delay`` and with ``--reload-delay 0``. Median of
   ``--reloads`` saves. Needs watchfiles (``pip install 'prefork[reload]'``).

Every server runs in a session of its own on 127.0.0.1, killed whole at the end.
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
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from _peers import request
from _probes import wait_for
from _proc import children, free_port, stop_session

APP = """\
import asyncio

VERSION = {version!r}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(0.5)
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": VERSION.encode()}})
"""


def get(port: int, path: str = "/") -> bytes | None:
    """The body of a 200 answer to GET ``path`` (None: no answer, or not 200)."""
    try:
        status, body = request(port, "GET", path)
    except (OSError, http.client.HTTPException):
        return None
    return body if status == 200 else None


@contextlib.contextmanager
def served(app_dir: Path, *flags: str, prefix: tuple[str, ...] = ()) -> Iterator[tuple[int, int]]:
    """A ``prefork serve`` of ``app_dir``'s app (2 workers); yields (port, its session's pid)."""
    port = free_port()
    argv = [*prefix, sys.executable, "-m", "prefork", "serve", "app:app", "--app-dir"]
    argv += [str(app_dir), "--bind", f"127.0.0.1:{port}", "--workers", "2", *flags]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for(lambda: get(port) is not None, 30, "the first answer", step=0.005)
        yield port, proc.pid
    finally:
        stop_session(proc)


def sigterm_as_pid1(app_dir: Path, flags: tuple[str, ...], in_flight: bool) -> float:
    """Seconds from SIGTERM to the master's exit, the master being PID 1 of a namespace."""
    prefix = ("unshare", "--pid", "--fork", "--mount-proc")
    with served(app_dir, *flags, prefix=prefix) as (port, unshare_pid):
        (master,) = children(unshare_pid)  # the namespace's PID 1, as the host sees it
        if in_flight:
            slow = threading.Thread(target=get, args=(port, "/slow"))
            slow.start()
            time.sleep(0.1)  # the request reaches a worker
        began = time.monotonic()
        os.kill(master, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{master}").exists(), 30, "the master's exit", step=0.005)
        gone = time.monotonic()
        if in_flight:
            slow.join()
        return gone - began


def save_to_answer(app_dir: Path, port: int, version: str) -> float:
    """Seconds from writing the app with ``version`` to GET / answering it."""
    began = time.monotonic()
    (app_dir / "app.py").write_text(APP.format(version=version))
    wait_for(lambda: get(port) == version.encode(), 30, f"{version} answering", step=0.005)
    return time.monotonic() - began


def watching(app_dir: Path, port: int) -> None:
    """Wait until the watcher acts on a save (untimed): the HTTP workers may answer before
    the watcher process watches; a save made meanwhile is found by the watcher's first walk,
    and its reload would be timed from the save, watcher's start-up included."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        (app_dir / "app.py").write_text(APP.format(version="warm-up"))
        with contextlib.suppress(RuntimeError):
            wait_for(lambda: get(port) == b"warm-up", 1, "the warm-up answering")
            return
    raise RuntimeError("the watcher did not act on a save within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--delay", type=float, default=2.0)
    parser.add_argument("--reloads", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app_dir = Path(tmp)
        (app_dir / "app.py").write_text(APP.format(version="v0"))
        cases = (
            ("SIGTERM -> exit as PID 1, idle", (), False),
            ("SIGTERM -> exit as PID 1, a 0.5 s request in flight", (), True),
            (f"SIGTERM -> exit as PID 1, --shutdown-delay {args.delay:g}",
             ("--shutdown-delay", f"{args.delay:g}"), False),
        )  # fmt: skip
        for label, flags, in_flight in cases:
            took = [sigterm_as_pid1(app_dir, flags, in_flight) for _ in range(args.runs)]
            print(f"{label}: median {statistics.median(took):.3f} s (max {max(took):.3f})")
        for label, flags in (("default", ()), ("--reload-delay 0", ("--reload-delay", "0"))):
            with served(app_dir, "--reload", "--reload-dir", str(app_dir), *flags) as (port, _):
                watching(app_dir, port)
                took = []
                for i in range(args.reloads):
                    took.append(save_to_answer(app_dir, port, f"v{i + 1}"))
                    time.sleep(0.5)  # let the watcher's next batch start quiet
            print(
                f"--reload ({label}): save -> new code answering: median "
                f"{statistics.median(took):.3f} s (max {max(took):.3f})"
            )


if __name__ == "__main__":
    main()

"""A ``prefork serve`` master for the measuring scripts, started as a user would.

It runs in a scratch directory (not the checkout), so ``python -m prefork`` imports prefork
from PYTHONPATH when that is set: ``git archive <commit> | tar -x -C /tmp/base`` and
``PYTHONPATH=/tmp/base python benchmarks/<script>.py`` measure an older commit.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _proc import children

READY = re.compile(r"\(pid (\d+), generation \d+\) is ready")


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class Served:
    """``python -m prefork serve APP`` on 127.0.0.1 (a port the OS picks, passed as fd://N)
    or on ``bind`` (e.g. ``unix:/path``), in its own session, logging to a file."""

    def __init__(
        self,
        app: str,
        app_dir: Path,
        workdir: Path,
        *options: str,
        workers: int = 1,
        bind: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        sock = None
        if bind is None:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(2048)
            self.port = sock.getsockname()[1]
            bind = f"fd://{sock.fileno()}"
        self.workers = workers
        self.log = workdir / f"prefork-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "prefork", "serve", "--bind", bind, "--app-dir", str(app_dir)]
        argv += ["--workers", str(workers), *options, app]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                pass_fds=[sock.fileno()] if sock is not None else [],
                start_new_session=True,
                cwd=workdir,
                env={**os.environ, **(env or {})},
            )
        if sock is not None:
            sock.close()
        self.pid = self.proc.pid
        self.wait_workers()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_workers(self, replacing: set[int] = frozenset(), timeout: float = 30.0) -> set[int]:
        found: list[set[int]] = []

        def settled() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefork exited:\n{self.text()[-2000:]}")
            pids = children(self.pid)
            ready = {int(p) for p in READY.findall(self.text())}
            if len(pids) == self.workers and pids <= ready and not pids & replacing:
                found.append(pids)
                return True
            return False

        wait_until(settled, timeout, f"{self.workers} ready workers")
        return found[-1]

    def worker(self) -> int:
        (pid,) = children(self.pid)
        return pid

    def reload(self) -> float:
        """SIGHUP; wait until the reload is done and every old worker has exited."""
        old = children(self.pid)
        done = self.text().count("reload done")
        began = time.monotonic()
        os.kill(self.pid, signal.SIGHUP)
        wait_until(lambda: self.text().count("reload done") > done, 60, "reload done")
        self.wait_workers(replacing=old, timeout=60)
        return time.monotonic() - began

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(40)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(5)

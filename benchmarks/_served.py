"""A ``prefork serve`` master for the measuring scripts, started as a user would, and the
``main()`` of the scripts that run named checks, each on a server of its own.

It runs in a scratch directory (not the checkout), so ``python -m prefork`` imports prefork
from PYTHONPATH when that is set: ``git archive <commit> | tar -x -C /tmp/base`` and
``PYTHONPATH=/tmp/base python benchmarks/<script>.py`` measure an older commit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from _proc import children

import prefork

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


# -- scripts of named checks ------------------------------------------------------------------


class Checks(Protocol):
    """A script's checks: a method per check, named after it (``-`` as ``_``), which takes the
    server ``server_for`` started, or nothing where that is None (the check starts its own)."""

    def server_for(self, check: str) -> Served | None: ...


def checks_parser(doc: str, checks: list[str]) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc``, with ``--only`` (the checks to
    run; all by default)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=checks, default=checks)
    return parser


def run_checks(only: list[str], prefix: str, bench: Callable[[Path], Checks]) -> int:
    """Say which prefork is measured, then run each check in ``only`` and print its line;
    ``bench`` gets a scratch directory (named with ``prefix``), removed at the end."""
    print(f"prefork from {Path(prefork.__file__).parent.parent}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        checks = bench(Path(tmp))
        for name in only:
            check = getattr(checks, name.replace("-", "_"))
            server = checks.server_for(name)
            if server is None:
                print(f"{name}: {check()}", flush=True)
                continue
            try:
                print(f"{name}: {check(server)}", flush=True)
            finally:
                server.stop()
    return 0

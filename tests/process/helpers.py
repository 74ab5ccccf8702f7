"""Helpers for the real-process tests: start a master as a user would, watch it, clean up.

Conditions are polled against a deadline (``wait_until``); nothing waits a fixed time for
something to happen.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

APPS = Path(__file__).parent / "apps"
ROOT = Path(__file__).parents[2]
T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 5.0, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; return that, or fail at the
    deadline saying what was waited for (``what``, else the predicate's source line)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true after {timeout}s: {what or _source(predicate)}")
        time.sleep(0.01)


def _source(predicate: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)


def proc_state(pid: int) -> str | None:
    """The process state letter (R, S, Z, ...) or None when the pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has already exited)."""
    return proc_state(pid) not in (None, "Z", "X")


def children(pid: int) -> set[int]:
    """The live child processes of ``pid``."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return set()
    return {int(p) for p in text.split() if alive(int(p))}


def is_template(pid: int) -> bool:
    """Whether ``pid`` is a template or a standby worker, as its process title says."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b" template gen " in title or b" standby gen " in title


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listener() -> socket.socket:
    """A listening socket on 127.0.0.1 with a port chosen by the OS, to hand over as fd://N."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def ask(port: int, line: str = "ping", timeout: float = 3.0) -> str:
    """Send one command line to an Echo worker and return its one-line answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.decode().strip()


def tell(port: int, line: str) -> None:
    """Send one command line to an Echo worker without waiting for an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=3.0) as conn:
        conn.sendall(line.encode() + b"\n")


class Conn:
    """A kept-open connection to one particular Echo worker (workers share the socket, so
    connect until the one wanted answers)."""

    def __init__(self, port: int, pid: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=3.0)
            self.file = self.sock.makefile("rw")
            if self.ask("ping").split()[1] == str(pid):
                return
            self.close()
            if time.monotonic() >= deadline:
                raise AssertionError(f"worker {pid} never took a connection")

    def tell(self, line: str) -> None:
        self.file.write(line + "\n")
        self.file.flush()

    def ask(self, line: str) -> str:
        self.tell(line)
        return self.file.readline().strip()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def pong(port: int) -> tuple[int, int, str]:
    """``ping`` a worker: its (pid, generation, version)."""
    verb, pid, gen, version = ask(port).split()
    assert verb == "pong"
    return int(pid), int(gen), version


class MasterProcess:
    """A master started with ``subprocess.Popen`` in its own session (process group)."""

    def __init__(
        self,
        argv: list[str],
        workdir: Path,
        *,
        pass_fds: Iterable[socket.socket] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.out_path = workdir / "stdout.txt"
        self.err_path = workdir / "stderr.txt"
        socks = list(pass_fds)
        environ = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        environ["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), str(APPS), str(workdir), environ.get("PYTHONPATH", "")]
        )
        # A master's control socket goes in the test's own runtime dir, not the user's.
        runtime = workdir / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        environ["XDG_RUNTIME_DIR"] = str(runtime)
        environ.update(env or {})
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=[s.fileno() for s in socks],
                env=environ,
                cwd=ROOT,
            )
        for s in socks:
            s.close()  # the master holds the only copy from now on
        self.pid = self.popen.pid

    # --- watching ------------------------------------------------------------------------

    def events(self, name: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """The JSON event lines printed so far, filtered by name and field values."""
        found = []
        # The master may be half-way through writing a long line: only whole lines count.
        for line in self.out_path.read_text().split("\n")[:-1]:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if name is not None and event["e"] != name:
                continue
            if all(event.get(k) == v for k, v in match.items()):
                found.append(event)
        return found

    def wait_event(
        self, name: str, timeout: float = 5.0, count: int = 1, **match: Any
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` events match; return them all."""

        def enough() -> list[dict[str, Any]]:
            self.check_running(name)
            found = self.events(name, **match)
            return found if len(found) >= count else []

        return wait_until(enough, timeout, f"{count} x {name} {match}")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def check_running(self, doing: str = "") -> None:
        if self.popen.poll() is not None:
            raise AssertionError(
                f"master exited ({self.popen.returncode}) while waiting for {doing}\n"
                f"stderr:\n{self.stderr()[-3000:]}"
            )

    def workers(self) -> set[int]:
        """The master's children but its templates and their standbys (with ``--template``):
        the processes that serve."""
        return {pid for pid in children(self.pid) if not is_template(pid)}

    def templates(self) -> set[int]:
        """The master's templates and standby workers (``--template``)."""
        return {pid for pid in children(self.pid) if is_template(pid)}

    def wait_workers(self, n: int, timeout: float = 5.0) -> set[int]:
        """Wait until exactly ``n`` worker processes run under the master."""

        def exactly() -> list[set[int]]:
            self.check_running(f"{n} workers")
            pids = self.workers()
            return [pids] if len(pids) == n else []

        return wait_until(exactly, timeout, f"{n} workers under the master")[0]

    def ready_pids(self, type: str | None = None) -> set[int]:
        """Pids that reported ready and have not left (as the callbacks saw them)."""
        match = {} if type is None else {"type": type}
        ready = {e["pid"] for e in self.events("worker_ready", **match)}
        gone = {e["pid"] for e in self.events("worker_exit", **match)}
        gone |= {e["pid"] for e in self.events("worker_crash", **match)}
        return ready - gone

    def wait_ready(self, n: int, type: str | None = None, timeout: float = 5.0) -> set[int]:
        """Wait until ``n`` workers are ready and exactly ``n`` workers run; return the pids."""

        def settled() -> set[int] | None:
            self.check_running(f"{n} ready workers")
            ready = self.ready_pids(type)
            if len(ready) != n:
                return None
            if type is None and self.workers() != ready:
                return None
            return ready

        return wait_until(settled, timeout, f"{n} ready workers")

    # --- acting --------------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float = 30.0) -> int:
        """The exit code, once the master has exited (a deadline: a busy machine may start a
        Python, import the app and stop workers slowly)."""
        return self.popen.wait(timeout)

    def stop(self) -> None:
        """Stop gracefully if still running (lets coverage write its data), then kill whatever
        is left in the process group."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(5)


def app_argv(config: dict[str, Any]) -> list[str]:
    return [sys.executable, str(APPS / "app.py"), json.dumps(config)]

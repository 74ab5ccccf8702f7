"""Step 1 of an in-place upgrade (``_upgrade.py``): the check. A child runs the master's own
command line with ``--check-config`` (the new code parses the options and imports the app, as a
start would); its output comes through a pipe on the master's selector, its exit through the
master's reaper, within a deadline (then its process group is killed). A failure refuses the
upgrade with the check's error line; nothing changes. ``check_format`` and ``check_brokers``
are the check child's side: what the running master tells it through its environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from prefork.core._handover import FORMAT
from prefork.core._options import ConfigError
from prefork.core._version import VERSION
from prefork.master import _process
from prefork.master._signals import reset_in_child

if TYPE_CHECKING:
    from prefork.master._upgrade import Relaunch

#: Names the memfd that holds the state the image before handed over (its fd number); the
#: check child is started without it.
ENV = "PREFORK_UPGRADE"
#: Given to the check child: the format of the state it would be handed over. A prefork that
#: cannot read it refuses, so the upgrade is refused before anything changes.
FORMAT_ENV = "PREFORK_UPGRADE_FORMAT"
#: Given to the check child too: the running master's brokers and the addresses each listens
#: on (JSON). The new image keeps them (it adopts the workers and the listening sockets), so
#: a command line or config file that now declares others is refused by the check, before
#: the exec, instead of failing the new image after it.
BROKERS_ENV = "PREFORK_UPGRADE_BROKERS"
#: How long the check may take beyond the app's import (``--boot-timeout`` bounds that).
CHECK_MARGIN = 10.0


class Check:
    """The child that runs the master's command line with ``--check-config``: its output
    (the last ``MAX_OUTPUT`` bytes), its exit code once reaped, its deadline."""

    MAX_OUTPUT = 1 << 16

    def __init__(self, pid: int, fd: int, deadline: float) -> None:
        self.pid = pid
        self.fd = fd
        self.deadline = deadline
        self.output = b""
        self.eof = False
        self.code: int | None = None  # the exit code (negative: killed by that signal)

    def read(self) -> None:
        """Take what the child wrote (the selector said there is something, or its end)."""
        try:
            chunk = os.read(self.fd, self.MAX_OUTPUT)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
        self.output = (self.output + chunk)[-self.MAX_OUTPUT :]

    def exited(self, reaped: _process.Reaped) -> None:
        self.code = reaped.exit_code if reaped.signal is None else -reaped.signal

    @property
    def done(self) -> bool:
        return self.eof and self.code is not None

    def verdict(self) -> str:
        """ "" when the new code can start; else why not, in one line: the check's own error
        line (``prefork: error: ...``), else its last line, else how it ended."""
        if self.code == 0:
            return ""
        lines = [line.strip() for line in self.output.decode(errors="replace").splitlines()]
        lines = [line for line in lines if line]
        said = [line for line in lines if line.startswith("prefork: error: ")]
        if said or lines:
            why = (said or lines)[-1].removeprefix("prefork: error: ")
        else:
            assert self.code is not None
            why = f"it ended with code {self.code}" if self.code > 0 else f"signal {-self.code}"
        return f"the installed prefork cannot start this master: {why[:300]}"

    def kill(self) -> None:
        """End the check and whatever it started (its process group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def start_check(relaunch: Relaunch, deadline: float) -> Check:
    """Fork the check child (``Check``); raises ``OSError`` if it cannot be."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    argv = [*relaunch.argv, "--check-config"]
    brokers = json.dumps({name: list(listen) for name, listen in relaunch.brokers})
    env = {**os.environ, FORMAT_ENV: str(FORMAT), BROKERS_ENV: brokers}
    env.pop(ENV, None)

    def before() -> None:
        reset_in_child()
        os.setpgid(0, 0)  # a group of its own: the deadline kills what it started, too
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.chdir(relaunch.cwd)

    def run() -> int:
        _close_on_exec()
        try:
            os.execve(relaunch.executable, argv, env)
        except OSError as exc:
            print(f"prefork: error: cannot run {relaunch.executable}: {exc}", file=sys.stderr)
        return 127

    try:
        pid = _process.fork_worker(run, [read_end], before)
    except OSError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    with contextlib.suppress(OSError):  # the child's own setpgid may have come first
        os.setpgid(pid, pid)
    return Check(pid, read_end, deadline)


def _close_on_exec(lowest: int = 3) -> None:
    """Let the exec close every fd from ``lowest`` on (the master's listening sockets are
    inheritable, for its workers: a check has no business with them)."""
    for name in os.listdir("/proc/self/fd"):
        if int(name) >= lowest:
            with contextlib.suppress(OSError):
                os.set_inheritable(int(name), False)


def check_format(environ: Mapping[str, str]) -> None:
    """In the check child (``FORMAT_ENV`` set): raise ``ConfigError`` unless this prefork
    reads the state the running master would hand over."""
    wanted = environ.get(FORMAT_ENV)
    if wanted is not None and wanted != str(FORMAT):
        raise ConfigError(
            f"prefork {VERSION} reads the state of a master in format {FORMAT}, and the "
            f"running master hands over format {wanted}; restart it instead"
        )


def check_brokers(environ: Mapping[str, str], brokers: Mapping[str, Sequence[str]]) -> None:
    """In the check child (``BROKERS_ENV`` set): raise ``ConfigError`` unless the command
    line declares the running master's ``brokers`` (name -> listen addresses), which an
    upgrade keeps."""
    given = environ.get(BROKERS_ENV)
    if given is None:
        return
    try:
        running = {name: list(listen) for name, listen in json.loads(given).items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise ConfigError(f"{BROKERS_ENV} is not the running master's brokers: {exc}") from None
    wanted = {name: list(listen) for name, listen in brokers.items()}
    restart = "an upgrade keeps the running master's; restart it to change them"
    if sorted(running) != sorted(wanted):
        have, want = ", ".join(sorted(running)), ", ".join(sorted(wanted))
        raise ConfigError(f"the brokers would be {want}, the running master has {have}: {restart}")
    for name in sorted(running):
        if running[name] != wanted[name]:
            have, want = " ".join(running[name]), " ".join(wanted[name])
            raise ConfigError(
                f"broker {name!r} would listen on {want or 'nothing'}, the running master "
                f"listens on {have or 'nothing'}: {restart}"
            )

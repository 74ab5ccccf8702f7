"""``prefork ctl upgrade``: the master re-executes itself in place on the prefork installed
now, keeping its pid, its listening sockets, its workers (their channels), its metric totals
and its control socket; the new image then replaces the workers as a reload does.

Three steps, none of which blocks the select loop:

1. The check (``Check``, in ``_upgrade_check.py``): a child runs the master's own command
   line with ``--check-config``; a failure refuses the upgrade with the check's error line;
   nothing changes.
2. The hand-over (``hand_over``): what the master knows, as JSON (``export``: the
   supervisor's records, each broker's listening sockets, each worker's channel, the console
   with its sockets and metric totals), goes into a memfd whose number ``PREFORK_UPGRADE``
   names; the fds it names are made inheritable (nothing else is), the master's signals are
   blocked (a mask survives ``execve``, handlers do not: a SIGTERM in between would take its
   default action and kill the master; those already caught but not handled yet are raised
   again, pending), and the master execs its own command line, from the directory it was
   started in (``--chdir`` is applied again).
3. The take-over (``incoming``, ``listeners``, ``take_over``, from ``Upgrader.take_over``):
   the new image reads the state back, builds its objects on the same fds, unblocks its
   signals once its handlers are in place (signals that came meanwhile are delivered then: a
   SIGCHLD has what exited meanwhile reaped), and posts a reload of every broker.

Rejected: a second master beside the first (nginx's and unicorn's binary upgrade): the pid
would change, and systemd (``MAINPID``), pid files and supervisors follow the pid; two masters
would also run two sets of workers at once. Pickling the state: the two images may be
different versions of prefork; plain JSON, field by field (``core/_handover.py``), is read by
the version after.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from prefork.core._events import Action
from prefork.core._handover import FORMAT
from prefork.core._ledger import Ledger
from prefork.core._options import ConfigError
from prefork.core._supervisor import Supervisor
from prefork.core._version import VERSION
from prefork.master._channels import Channels
from prefork.master._signals import INTENTS

# Step 1, the check, is _upgrade_check.py; the master and the CLI name it from here.
from prefork.master._upgrade_check import BROKERS_ENV as BROKERS_ENV
from prefork.master._upgrade_check import CHECK_MARGIN as CHECK_MARGIN
from prefork.master._upgrade_check import ENV as ENV
from prefork.master._upgrade_check import FORMAT_ENV as FORMAT_ENV
from prefork.master._upgrade_check import Check as Check
from prefork.master._upgrade_check import check_brokers as check_brokers
from prefork.master._upgrade_check import check_format as check_format
from prefork.master._upgrade_check import start_check as start_check
from prefork.ops._console import Console

#: The signals blocked across the exec: the master's, whose default action would end it.
BLOCKED = frozenset(INTENTS)
#: The memfd's name (``/proc/self/fd/N`` reads ``/memfd:prefork-upgrade (deleted)``): what
#: ``incoming`` checks ``ENV`` names before it reads anything.
MEMFD = "prefork-upgrade"
NOT_SERVE = "in-place upgrade needs a master started by prefork serve"
log = logging.getLogger("prefork.master")


@dataclass(frozen=True, slots=True)
class Relaunch:
    """How the master was started, so that it can start again the same way: the interpreter,
    the command line as the OS gave it (``sys.orig_argv``, with the interpreter's own flags),
    and the directory it was started in (``--chdir`` moves it later)."""

    executable: str
    argv: tuple[str, ...]
    cwd: str
    #: Each broker and the addresses it listens on (``Master.relaunch_as`` fills it in).
    brokers: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def of_this_process(cls, cwd: str, argv: Sequence[str] | None = None) -> Relaunch:
        """This process, started in ``cwd``; ``argv``: the arguments ``prefork.cli.main``
        was given instead of the command line's (run again as ``python -m prefork``)."""
        if argv is None:
            return cls(sys.executable, tuple(sys.orig_argv), cwd)
        return cls(sys.executable, (sys.executable, "-m", "prefork", *argv), cwd)


def refusal(relaunch: Relaunch | None, ledger: Ledger, under_way: bool) -> str:
    """Why the master cannot start an upgrade now ("": it can)."""
    if relaunch is None or not relaunch.executable:
        return NOT_SERVE
    if under_way:
        return "an upgrade is under way already"
    if ledger.phase() != "serving":
        return f"the master is {ledger.phase()}"
    if ledger.reloading():
        return "a reload is running; upgrade once it is done (prefork ctl reload --wait)"
    if draining := [name for name, b in ledger.brokers.items() if b.draining]:
        return f"{', '.join(draining)} is draining; resume it first"
    return ""


def export(
    supervisor: Supervisor,
    sockets: Mapping[str, list[socket.socket]],
    channels: Channels,
    console: Console,
) -> tuple[dict[str, Any], list[int]]:
    """What the master knows, as plain data, and the fds it names (to carry over)."""
    carried: list[int] = []

    def carry(sock: socket.socket) -> int:
        carried.append(sock.fileno())
        return sock.fileno()

    doc = {
        "format": FORMAT,
        "pid": os.getpid(),
        "prefork": VERSION,
        "supervisor": supervisor.export(),
        "sockets": {name: [carry(s) for s in socks] for name, socks in sockets.items()},
        "channels": channels.export(carry),
        "console": console.export(carry),
    }
    return doc, carried


def hand_over(
    relaunch: Relaunch,
    doc: Mapping[str, Any],
    carried: Iterable[int],
    waiting: Callable[[], Iterable[int]],
) -> None:
    """Re-execute the master (see the module's comment), handing ``doc`` over with the fds
    ``carried``. ``waiting`` takes the signals that came and were not handled yet off the
    wake-up fd (which the exec closes): they are raised again while blocked, so they stay
    pending across the exec. Returns only if the exec failed, raising its ``OSError``,
    everything as it was: the fds not inheritable again, the signals unblocked (and those
    pending delivered), the directory the same."""
    data = json.dumps(doc, separators=(",", ":")).encode()
    memfd = os.memfd_create(MEMFD, 0)  # no MFD_CLOEXEC: the new image reads it
    try:
        _write_all(memfd, data)
        os.lseek(memfd, 0, os.SEEK_SET)
        env = {**os.environ, ENV: str(memfd)}
        was = {fd: os.get_inheritable(fd) for fd in carried}
        cwd = os.getcwd()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
        try:
            for signum in waiting():
                if signum in BLOCKED:  # blocked: pending, and pending survives execve
                    signal.raise_signal(signum)
            for fd in was:
                os.set_inheritable(fd, True)
            os.chdir(relaunch.cwd)
            _flush_output()
            os.execve(relaunch.executable, list(relaunch.argv), env)
        finally:  # the exec failed: as it was
            with contextlib.suppress(OSError):
                os.chdir(cwd)
            for fd, inheritable in was.items():
                os.set_inheritable(fd, inheritable)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    finally:
        os.close(memfd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _flush_output() -> None:
    """What the log and stdout hold goes out before the exec drops it."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def incoming(environ: MutableMapping[str, str], pid: int) -> dict[str, Any] | None:
    """The state the image before this one handed over, when an upgrade started this one
    (``ENV`` says where, and is removed: workers and checks must not see it); else None.
    Raises ``ConfigError`` saying why it cannot be read (then nothing was read: ``ENV`` names
    no memfd of an upgrade, such as stdin, which could block)."""
    where = environ.pop(ENV, None)
    if where is None:
        return None
    what = (
        f"{ENV}={where[:20]!r} does not name the state of an in-place upgrade (prefork ctl "
        "upgrade sets it for the master it re-executes; unset it)"
    )
    fd = int(where) if where.isdigit() and len(where) < 10 else -1
    try:
        named = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        named = ""
    if not named.startswith(f"/memfd:{MEMFD}"):
        raise ConfigError(what)
    try:
        with os.fdopen(fd, "rb") as f:
            doc = json.loads(f.read())
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{what}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise ConfigError(f"{what}: its state has format {found!r}, this prefork reads {FORMAT}")
    if doc.get("pid") != pid:
        raise ConfigError(f"{what}: its state is of process {doc.get('pid')!r}, not this one")
    return doc


def listeners(doc: Mapping[str, Any], brokers: Iterable[str]) -> dict[str, list[socket.socket]]:
    """Each broker's listening sockets, carried over by the image before (``ConfigError``:
    a broker this master does not have, or a socket that is not open)."""
    taken: dict[str, list[socket.socket]] = {}
    try:
        for name, fds in doc["sockets"].items():
            if name not in brokers:
                raise ConfigError(f"the master before the upgrade had a broker {name!r}")
            taken[name] = [socket.socket(fileno=int(fd)) for fd in fds]
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise ConfigError(f"cannot take over the listening sockets: {exc}") from None
    return taken


def unblock() -> None:
    """The new image's handlers are in place: what the old one blocked may come."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED)


def take_over(
    doc: Mapping[str, Any],
    supervisor: Supervisor,
    channels: Channels,
    open_console: Callable[[Mapping[str, Any]], None],
) -> list[Action]:
    """Adopt what the image before handed over (``doc``, from ``incoming``): the supervisor's
    records, the workers' channels, the console (``open_console`` opens it on what ``doc``
    says). Returns the actions the supervisor asks for; raises ``ConfigError`` if ``doc``
    does not fit this master."""
    try:
        actions = supervisor.adopt(doc["supervisor"], time.monotonic())
        for channel in doc["channels"]:
            channels.adopt(channel)
        open_console(doc["console"])
    except (KeyError, TypeError, ValueError, OSError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise ConfigError(f"cannot take over from the master before the upgrade: {why}") from None
    return actions

"""Forking workers and reaping them.

The child side of ``fork_worker`` always leaves with ``os._exit``: it must never return into
the master's code (its loop, its ``finally`` blocks, atexit handlers), whatever happens.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import os
import pwd
import resource
import signal
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

from prefork.core._options import ConfigError
from prefork.ops._accounts import ProcessUsage

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NAME = 15


@dataclass(frozen=True, slots=True)
class Reaped:
    pid: int
    exit_code: int | None
    signal: int | None


def fork_worker(
    run: Callable[[], int], close_fds: Iterable[int], before: Callable[[], None]
) -> int:
    """Fork; in the child close ``close_fds``, call ``before()``, then leave with ``run()``'s code.

    Returns the child's pid in the master. Raises ``OSError`` if the fork fails.
    """
    master_pid = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    _in_child(run, close_fds, before, master_pid)  # pragma: no cover  (never returns)


def _in_child(
    run: Callable[[], int], close_fds: Iterable[int], before: Callable[[], None], master_pid: int
) -> NoReturn:
    # A function of its own, not inline after fork(): a tracer (coverage) installed at fork
    # time only sees frames entered after it, so this is how the child side gets measured.
    code = 1
    try:
        before()
        for fd in close_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        die_with_parent(master_pid)
        code = run()
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGKILL when the master dies; leave now if it already has."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the master died between fork and prctl
        os._exit(1)


def parent(pid: int) -> int | None:
    """The parent of process ``pid`` (None: no such process, or no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[1])  # the name, in (), may hold anything


def reap() -> list[Reaped]:
    """Collect every child that has exited, without blocking."""
    reaped: list[Reaped] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            reaped.append(Reaped(pid, None, -code))
        else:
            reaped.append(Reaped(pid, code, None))


def _prctl(option: int, value: int | bytes) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def set_name(name: str) -> None:
    """The process's short name (``/proc/PID/comm``: what ps and top show), 15 bytes."""
    _prctl(PR_SET_NAME, name.encode()[:15])


def set_title(title: str, short: str) -> None:
    """What ps and top show: the whole ``title`` as the command line (``ps ax``) when the
    optional ``setproctitle`` is installed, and ``short`` as the name (``ps -e``, top) in any
    case (set last: setproctitle sets the name too, cut to 15 bytes)."""
    try:
        import setproctitle
    except ImportError:
        pass
    else:
        setproctitle.setproctitle(title)
    set_name(short)


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss(pid: int) -> int | None:
    """The resident memory of process ``pid`` in bytes (Linux), or None if it is unknown."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def usage(proc: str = "/proc") -> ProcessUsage | None:
    """This process's CPU time, memory, open fds and their limit, and start time, read as
    prometheus_client's process collector reads them; None without ``/proc`` (not Linux)."""
    try:
        with open(f"{proc}/self/stat", "rb") as f:
            # after the name, which may hold spaces and ')': state is the first, utime the 12th
            fields = f.read().rpartition(b")")[2].split()
        with open(f"{proc}/stat", "rb") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith(b"btime "))
        open_fds = len(os.listdir(f"{proc}/self/fd"))
        return ProcessUsage(
            cpu_seconds=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
            resident_bytes=int(fields[21]) * PAGE_SIZE,
            virtual_bytes=int(fields[20]),
            open_fds=open_fds,
            max_fds=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            start_time=boot + int(fields[19]) / CLOCK_TICKS,
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def adopt_orphans(on: bool) -> None:
    """Become (or stop being) a child subreaper: processes that workers fork and leave behind
    become our children instead of init's, so we reap them and can end them on stop."""
    _prctl(PR_SET_CHILD_SUBREAPER, int(on))


def children() -> set[int]:
    """The pids of this process's live children (Linux; an empty set elsewhere)."""
    found: set[int] = set()
    pid = os.getpid()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.update(int(n) for n in f.read().split())
    return found


def end(pids: Iterable[int]) -> None:
    """SIGKILL each pid and reap it (they are our children)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


@dataclass(frozen=True, slots=True)
class Identity:
    """The user and group workers run as (None: the master's own)."""

    uid: int | None = None
    gid: int | None = None

    def assume(self) -> None:
        """In a forked worker: become this group, then this user (the other order would
        leave no right to change the group)."""
        if self.gid is not None:
            with contextlib.suppress(PermissionError):  # not root: keep our groups
                os.setgroups([self.gid])
            os.setgid(self.gid)
        if self.uid is not None:
            os.setuid(self.uid)


def identity(user: str | None, group: str | None) -> Identity:
    """Resolve ``--user``/``--group`` names or numbers; ``ConfigError`` for an unknown one."""
    uid = gid = None
    if user is not None:
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, ValueError, OverflowError):  # a number out of range, '²'
            raise ConfigError(
                f"unknown user {user!r}; give a name or uid from /etc/passwd"
            ) from None
        uid, gid = entry.pw_uid, entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, ValueError, OverflowError):  # a number out of range, '²'
            raise ConfigError(
                f"unknown group {group!r}; give a name or gid from /etc/group"
            ) from None
    return Identity(uid, gid)

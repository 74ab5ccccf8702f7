"""The app, imported once before the master starts, in a child process: ``prefork serve`` and
``--check-config`` refuse an app that cannot start (a missing module or attribute, a module
that raises on import, a WSGI app, a factory misused) in one line, before anything binds.

Why a child: what the master imports stays imported in every worker it forks, through every
reload (that is what ``--preload`` asks for, and nothing else should). Why not only locate the
module (``find_spec``): that passes a missing attribute and a module that raises. The child
runs as the workers will (``--user``/``--group``), reports one line (and, for a failure in the
user's code, the user's frames) through a pipe, and leaves with ``os._exit``; it is forked as
a worker is, so it dies with the command line. Its import is bounded by ``--boot-timeout``.
Lifespan startup is not run: it may open connections that only workers should hold.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from typing import TextIO

from prefork.core._options import ConfigError
from prefork.master import _process
from prefork.master._process import Identity
from prefork.master._tracebacks import one_line, prefork_raised, user_traceback

_OK = b"ok\n"
#: The most of the child's answer read: its line, and the end of a traceback.
MAX_ANSWER = 1 << 16
MAX_LINE = 1024


def check_app(
    app: str,
    load: Callable[[], object],
    *,
    identity: Identity,
    timeout: float,
    preload: Callable[[], object] | None = None,
    traceback_to: TextIO | None = None,
) -> None:
    """Call ``load`` (which imports the app named ``app``, as a worker will) in a child
    process; raise ``ConfigError`` with one line when it cannot be served. An exception from
    the user's code is also written, with the user's frames only, to ``traceback_to`` when
    given. ``preload`` (which imports the app's module) is then called here too: the master
    shares that module with its workers. ``timeout`` bounds the import (``--boot-timeout``).
    (The HTTP worker's importer comes from ``prefork serve``: the master knows no worker.)"""
    answer = _ask_child(app, load, identity, timeout)
    if answer != _OK:
        line, _, trace = answer.decode(errors="replace").partition("\n")
        if trace and traceback_to is not None:
            print(trace.rstrip(), file=traceback_to)
        raise ConfigError(line)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # it imported in the child: something of the environment
            raise ConfigError(_failure(app, exc)) from None


def _failure(app: str, exc: BaseException) -> str:
    """The one-line refusal of ``exc``, raised while importing ``app``."""
    if prefork_raised(exc):
        return one_line(exc)  # an AppImportError names the app itself
    return f"cannot import app {app!r}: {one_line(exc)}"


def _ask_child(app: str, load: Callable[[], object], identity: Identity, timeout: float) -> bytes:
    """What a child importing the app answers: ``_OK``, or one line and maybe a traceback."""
    read_end, write_end = os.pipe()
    pid = _process.fork_worker(
        lambda: _child(app, load, identity, write_end), close_fds=[read_end], before=lambda: None
    )
    os.close(write_end)
    reaped = False
    try:
        answer = _read(read_end, time.monotonic() + timeout)
        if answer is None:
            os.kill(pid, signal.SIGKILL)
        status = os.waitpid(pid, 0)[1]
        reaped = True
    finally:
        os.close(read_end)
        if not reaped:  # interrupted (Ctrl-C): the child must not outlive us
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    what = f"cannot import app {app!r}"
    if answer is None:
        return f"{what}: importing it took longer than --boot-timeout ({timeout:g} s)".encode()
    code = os.waitstatus_to_exitcode(status)
    if answer and code == 0:
        return answer
    ended = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return f"{what}: the process importing it {ended} before it answered".encode()


def _read(fd: int, deadline: float) -> bytes | None:
    """All that comes through ``fd`` (at most ``MAX_ANSWER`` bytes kept) until its end, or
    None at ``deadline``."""
    answer = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, MAX_ANSWER)
        if not chunk:
            return answer
        answer = (answer + chunk)[:MAX_ANSWER]


def _child(app: str, load: Callable[[], object], identity: Identity, answer_to: int) -> int:
    """In the child: import the app as a worker would, write the answer to ``answer_to``;
    the exit code."""
    try:
        identity.assume()
    except OSError as exc:
        answer = f"cannot run the workers as --user/--group: {exc.strerror}\n".encode()
    else:
        try:
            load()
            answer = _OK
        except BaseException as exc:  # SystemExit raised on import is the user's doing too
            line = _failure(app, exc).encode()[:MAX_LINE]
            trace = b"" if prefork_raised(exc) else user_traceback(exc).encode()
            answer = line + b"\n" + trace[len(line) + 1 - MAX_ANSWER :]
    with os.fdopen(answer_to, "wb") as out:
        out.write(answer)
    return 0

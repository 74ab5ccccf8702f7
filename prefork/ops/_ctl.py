"""``prefork ctl``: ask a running master what it is doing, or steer it, over its control
socket (a unix socket speaking line-delimited JSON, protocol v1: one request per line, one
answer per line, in order).

Exit codes: 0 done; 1 the master answered ``ok: false`` (a refused request, a reload rolled
back); 2 a usage error, or no master could be reached or understood. Every failure is one line
on stderr that says what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import socket
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from time import monotonic, sleep
from typing import Any, TextIO

from prefork.core._frames import load_json
from prefork.ops import _control_path

# Its command line is _ctl_args.py; the CLI adds it from here.
from prefork.ops._ctl_args import add_parser as add_parser
from prefork.ops._ctl_view import confirmation, reload_done, status_table, upgraded

PROTOCOL = 1
#: How long an answer may take (all but ``reload --wait``, which waits as long as the reload).
ANSWER_TIMEOUT = 10.0
#: The longest answer line read (a status of thousands of workers fits many times over).
MAX_ANSWER = 16 * 1024 * 1024
WATCH_INTERVAL = 1.0
#: Cursor home, then clear to the end of the screen: ``top``'s redraw without a blank flash.
CLEAR_SCREEN = "\x1b[H\x1b[J"
#: Exit codes.
OK, REFUSED, UNREACHABLE = 0, 1, 2


class CtlError(Exception):
    """A failure: its message is the one line printed after ``prefork: error:``."""

    def __init__(self, message: str, code: int = UNREACHABLE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Target:
    """A control socket, and the flags that name it (said again in error lines)."""

    path: str
    flags: str


def main(args: argparse.Namespace) -> int:
    """Run ``prefork ctl``; returns the exit code."""
    try:
        if args.control is not None and args.pid is not None:
            raise CtlError("give --control PATH or --pid FILE, not both; see 'prefork ctl --help'")
        request = request_for(args)
        target = locate(args.control, args.pid, os.environ, os.getuid())
        # An upgrade answers once the new code has been checked: as long as an import takes.
        timeout = None if request.get("wait") or args.action == "upgrade" else ANSWER_TIMEOUT
        with Connection.open(target, timeout) as connection:
            return _run(connection, request, args, sys.stdout)
    except CtlError as exc:
        print(f"prefork: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("prefork: interrupted; the master carries on", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout's reader left (``status --watch | head``): done
        with contextlib.suppress(OSError, ValueError):  # and no second error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK


def request_for(args: argparse.Namespace) -> dict[str, Any]:
    """The request line's object for the action ``args`` name."""
    request: dict[str, Any] = {"v": PROTOCOL, "cmd": args.action}
    if args.action in ("reload", "drain", "resume", "scale"):
        request["broker"] = args.broker
    if args.action in ("reload", "upgrade"):
        request["wait"] = args.wait
    if args.action == "scale":
        request["workers"] = args.workers
    return request


def locate(
    control: str | None, pidfile: str | None, environ: Mapping[str, str], uid: int
) -> Target:
    """The socket ``--control`` or ``--pid`` names, else the only live one in the runtime
    directory. Raises ``CtlError`` when there is none there, or several."""
    if control is not None:
        return Target(control, f"--control {control}")
    if pidfile is not None:
        return Target(_control_path.for_pidfile(pidfile), f"--pid {pidfile}")
    directory = _control_path.runtime_dir(environ, uid)
    found = _control_path.live_sockets(directory)
    if not found:
        raise CtlError(
            f"no running master found: no live control socket in {directory}; start one, "
            "or name its socket with --control PATH or --pid FILE"
        )
    if len(found) > 1:
        raise CtlError(
            f"several masters are running ({', '.join(found)}); pick one with --control PATH"
        )
    return Target(found[0], f"--control {found[0]}")


class Connection:
    """One connection to a master: requests out, answers in, in order."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self._sock = sock
        self._answers = sock.makefile("rb")
        self.path = path

    @classmethod
    def open(cls, target: Target, timeout: float | None) -> Connection:
        """Connect; raises ``CtlError`` saying why not (missing, stale, not a socket...)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(target.path)
        except OSError as exc:
            sock.close()
            raise CtlError(_why_unreachable(target, exc)) from None
        return cls(sock, target.path)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._answers.close()
        self._sock.close()

    def ask(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Send ``request``, return the master's answer (``ok`` true or false). Raises
        ``CtlError`` when the master goes away, stays silent, or answers nonsense."""
        gone = (
            f"the master at {self.path} closed the connection before answering "
            "(did it stop? see its log)"
        )
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
            line = self._answers.readline(MAX_ANSWER + 1)
        except TimeoutError:
            raise CtlError(
                f"the master at {self.path} did not answer within {ANSWER_TIMEOUT:g}s; "
                "it may be stuck: see its log"
            ) from None
        except (BrokenPipeError, ConnectionResetError):
            raise CtlError(gone) from None
        if len(line) > MAX_ANSWER:
            raise CtlError(f"the master at {self.path} answered a line over {MAX_ANSWER} bytes")
        if not line.endswith(b"\n"):
            raise CtlError(gone)
        return self._decode(line)

    def _decode(self, line: bytes) -> dict[str, Any]:
        try:
            answer = load_json(line)
        except ValueError:
            shown = line.decode(errors="replace").strip()
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise CtlError(
                f"the master at {self.path} answered {shown!r}, which is not JSON; "
                "is it a prefork control socket?"
            ) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            raise CtlError(
                f"the master at {self.path} answered {_short(answer)}, not a protocol answer "
                "(no ok field); is it a prefork control socket?"
            )
        if answer.get("v") != PROTOCOL:
            raise CtlError(
                f"the master at {self.path} speaks protocol version {answer.get('v')!r} and "
                f"this prefork ctl speaks {PROTOCOL}; use the prefork ctl of the master's "
                "version"
            )
        return answer


def _run(
    connection: Connection, request: dict[str, Any], args: argparse.Namespace, out: TextIO
) -> int:
    if args.action == "status":
        if args.watch:
            return _watch(connection, request, args.json, out)
        status = _status_of(connection, _succeeded(connection.ask(request)))
        out.write(json.dumps(status, indent=2) + "\n" if args.json else status_table(status))
        return OK
    answer = connection.ask(request)
    if isinstance(upgrade := answer.get("upgrade"), Mapping):
        out.write(upgraded(upgrade) + "\n")
    if args.action in ("reload", "upgrade") and args.wait:
        reloads = answer.get("reloads")
        for reload in reloads if isinstance(reloads, list) else ():
            if isinstance(reload, Mapping) and reload.get("result") == "done":
                out.write(reload_done(reload) + "\n")
    out.flush()  # the lines above before the error line, when both go to a terminal
    _succeeded(answer)
    if not (args.action in ("reload", "upgrade") and args.wait):
        out.write(confirmation(request) + "\n")
    return OK


def _watch(connection: Connection, request: dict[str, Any], as_json: bool, out: TextIO) -> int:
    """A status a second over one connection, until Ctrl-C (0) or the master leaves (2)."""
    redraw = out.isatty() and not as_json
    first = True
    try:
        while True:
            asked = monotonic()
            status = _status_of(connection, _succeeded(connection.ask(request)))
            if as_json:
                frame = json.dumps(status) + "\n"
            else:
                frame = status_table(status)
                if redraw:
                    frame = CLEAR_SCREEN + frame
                elif not first:
                    frame = "\n" + frame
            out.write(frame)
            out.flush()
            first = False
            sleep(max(0.0, WATCH_INTERVAL - (monotonic() - asked)))
    except KeyboardInterrupt:
        return OK


def _succeeded(answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` when ok; else its error, as a ``CtlError`` with exit code 1."""
    if not answer["ok"]:
        error = answer.get("error") or "the master refused, and gave no reason"
        raise CtlError(" ".join(str(error).splitlines()), REFUSED)
    return answer


def _status_of(connection: Connection, answer: dict[str, Any]) -> dict[str, Any]:
    status = answer.get("status")
    if not isinstance(status, dict):
        raise CtlError(
            f"the master at {connection.path} answered a status of {_short(status)}, "
            "not an object; is its prefork the same version as this one?"
        )
    return status


def _why_unreachable(target: Target, exc: OSError) -> str:
    path = target.path
    missing = (
        f"no control socket at {path}: is the master running? "
        f"(it listens there with {target.flags})"
    )
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return missing
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied on {path}: the master runs as another user; run prefork ctl "
            "as that user (or as root)"
        )
    if exc.errno == errno.ECONNREFUSED:
        # connect() also refuses a path that is not a socket: say which it is.
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return missing  # gone in between
        if not stat.S_ISSOCK(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a file"
            return (
                f"{path} is not a socket but {kind}; name the master's control socket "
                "with --control PATH"
            )
        return (
            f"nothing listens on {path}: the master that made it is gone (a stale socket); "
            "remove it, or start the master again"
        )
    return f"cannot connect to {path}: {exc.strerror or exc}"


def _short(value: Any) -> str:
    shown = json.dumps(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."

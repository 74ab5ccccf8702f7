"""The template process: imports a generation's code once, then forks its workers on request.

The master forks it like a worker (signals reset, its other fds closed, SIGKILL when the
master dies). It imports the worker class and what the class names for templates (the HTTP
worker: the app's module), freezes what it imported for the garbage collector
(``gc.freeze()``: the collector would otherwise write to every object's header in each worker
and copy the shared pages), says it is ready, and waits on its link to the master. Its ready
message names the threads the import left running and counts the sockets it opened
(``left_open``): a fork copies no thread (a lock one held stays held in every worker) and
shares every socket, so ``--template auto`` then forks that generation's workers without it.
Threads started in C, outside ``threading``, cannot be seen.

Each request on the link is one message, ``{"worker": ID}``, carrying the new worker's end of
its channel as an SCM_RIGHTS fd (the master made the socketpair and keeps the other end). The
template forks twice: the middle process forks the worker, writes its pid on a pipe and
leaves at once, so the worker is reparented to the master, a child subreaper, which reaps and
supervises it as any other worker; the template answers ``{"worker": ID, "pid": PID}``. The
link is a SOCK_SEQPACKET socketpair: a message is a datagram, so nothing needs framing. The
template leaves when the master closes the link (a stop) or dies.

A worker is forked ahead of time (``Standby``): once the link has been quiet for a moment
the template forks one that waits, already adopted by the master, for its id and channel; a
request hands them to it and the template answers with its pid at once. So a worker killed
is replaced without a fork on the way (about 10 ms from the kill to the new worker
answering, against 25 ms with two forks), and the next standby is forked while nothing
waits. A standby that is gone (killed with the rest of a process group) is passed over and
the worker forked as above; one whose template leaves leaves too (the end of its socket).

Rejected: forking the worker directly from the template (the template would be its parent:
only a parent can wait for a child, and the master must stay every worker's reaper), and
``clone(CLONE_PARENT)`` (makes the master the parent at once, but skips the interpreter's
own fork handling: its locks and thread states would be those of the moment of the call).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import select
import socket
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from prefork.core._frames import load_json
from prefork.master import _child, _process
from prefork.master._tracebacks import user_traceback
from prefork.worker import Worker

#: The largest message on a template's link (a start error is cut to ``_child.MAX_ERROR``).
MAX_MESSAGE = 65536
#: How long a new worker waits to be reparented to the master once its middle process left.
REPARENT_TIMEOUT = 5.0
#: After this long without a request, the template forks a standby worker (see ``Standby``).
STANDBY_DELAY = 0.1


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """What a template needs: whose it is, the worker class, and how to make a worker's spec."""

    broker: str
    generation: int
    worker: type | str
    options: Mapping[str, Any]
    link: socket.socket  # the template's end
    master_pid: int
    worker_spec: Callable[[type[Worker], int, socket.socket], _child.WorkerSpec]
    identity: _process.Identity
    name: str = ""


def send(link: socket.socket, message: dict[str, Any], fd: int | None = None) -> None:
    """One message on a template link, with ``fd`` passed along (SCM_RIGHTS)."""
    socket.send_fds(link, [json.dumps(message).encode()], [] if fd is None else [fd])


def receive(link: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the fds it carried; (None, []) at the end of the link. Raises
    ``BlockingIOError`` on a non-blocking link with nothing to read, ``ValueError`` for a
    message that is not JSON."""
    data, fds, _flags, _addr = socket.recv_fds(link, MAX_MESSAGE, 4)
    if not data:
        return None, fds
    message = load_json(data)  # deep nesting is a ValueError, not a RecursionError
    return (message if isinstance(message, dict) else {}), fds


@dataclass(slots=True)
class Standby:
    """A worker forked ahead of time, adopted by the master already: it waits on ``sock`` for
    its id and channel (``_standby``)."""

    pid: int
    sock: socket.socket  # the template's end

    def take(self, worker_id: int, channel: socket.socket) -> bool:
        """Make it worker ``worker_id`` on ``channel``; False if it is gone."""
        try:
            send(self.sock, {"worker": worker_id}, channel.fileno())
            return True
        except OSError:
            return False
        finally:
            self.sock.close()


def run(spec: TemplateSpec) -> int:
    """The template's life: import, freeze, serve fork requests until the link ends."""
    spec.identity.assume()
    prefix = spec.name or "prefork"
    _process.set_title(
        f"{prefix}: {spec.broker} template gen {spec.generation}", f"{prefix}:{spec.broker}"
    )
    before = socket_inodes()  # the listening sockets and the link are the master's
    try:
        cls = _child.load_worker_class(spec.worker)
        cls.prepare_template(spec.options)
    except Exception as exc:
        send(spec.link, {"error": user_traceback(exc)[-_child.MAX_ERROR :]})
        return 1
    return serve_forks(spec, cls, left_open(before))


def left_open(before: set[int]) -> dict[str, Any]:
    """What the import left that a fork does not carry safely: the names of the threads
    running besides this one, and how many sockets are open that were not ``before``."""
    main = threading.main_thread()
    threads = [t.name for t in threading.enumerate() if t is not main]
    return {"threads": threads, "sockets": len(socket_inodes() - before)}


def socket_inodes() -> set[int]:
    """The inodes of the sockets this process holds open."""
    inodes = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            info = os.fstat(int(name))
        except OSError:  # the listing's own fd, closed by now
            continue
        if stat.S_ISSOCK(info.st_mode):
            inodes.add(info.st_ino)
    return inodes


def serve_forks(
    spec: TemplateSpec, cls: type[Worker], left: Mapping[str, Any] | None = None
) -> int:
    """The serving half of a template (a promoted worker's template starts here: it has
    imported everything already): freeze, say it is ready (with what the import ``left``
    open), and fork workers on request until the link ends."""
    link = spec.link
    gc.freeze()  # what is imported stays shared: the collector leaves it alone
    send(link, {"ready": True, **(left or {})})
    standby: Standby | None = None
    armed = True  # a standby may be forked (not after one could not be, until a fork works)
    try:
        while True:
            if standby is None and armed and not _readable(link, STANDBY_DELAY):
                standby = make_standby(spec, cls)
                armed = standby is not None
                if standby is not None:
                    send(link, {"standby": standby.pid})  # for ctl status
                continue
            message, fds = receive(link)
            if message is None:
                return 0  # the master closed the link (or is gone)
            spare, standby = standby, None
            if serve(spec, cls, message, fds, spare):
                armed = True
    finally:
        if standby is not None:
            standby.sock.close()  # it leaves at the end of its socket


def serve(
    spec: TemplateSpec,
    cls: type[Worker],
    message: dict[str, Any],
    fds: list[int],
    spare: Standby | None,
) -> bool:
    """Answer one request (``spare``: a standby to take it, if it can); True if a worker was
    forked (or a standby taken)."""
    worker_id = message.get("worker")
    channels = [socket.socket(fileno=fd) for fd in fds]
    try:
        if not isinstance(worker_id, int) or len(channels) != 1:
            return False  # not a request the master sends
        try:
            if spare is not None and spare.take(worker_id, channels[0]):
                pid, middle = spare.pid, 0
            else:
                cls.before_fork(spec.options)
                pid, middle = fork_worker(spec, cls, worker_id, channels[0])
        except Exception as exc:
            send(spec.link, {"worker": worker_id, "error": f"{type(exc).__name__}: {exc}"})
            return False
        send(spec.link, {"worker": worker_id, "pid": pid})  # first: the master waits
        if middle:
            os.waitpid(middle, 0)
        return True
    finally:
        for channel in channels:
            channel.close()


def _readable(link: socket.socket, timeout: float) -> bool:
    return bool(select.select([link], [], [], timeout)[0])


def make_standby(spec: TemplateSpec, cls: type[Worker]) -> Standby | None:
    """Fork a standby worker; None if it could not be (``before_fork`` raised, no fork)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        cls.before_fork(spec.options)
        pid, middle = fork_adopted(lambda parent: _standby(spec, cls, theirs, ours, parent))
    except Exception:
        ours.close()
        return None  # the next request forks its worker, and says what went wrong
    finally:
        theirs.close()
    os.waitpid(middle, 0)
    return Standby(pid, ours)


def fork_worker(
    spec: TemplateSpec, cls: type[Worker], worker_id: int, channel: socket.socket
) -> tuple[int, int]:
    """Fork worker ``worker_id``; returns its pid and that of the middle process (leaving:
    the caller waits for it). Raises ``OSError``."""
    return fork_adopted(lambda parent: _worker(spec, cls, worker_id, channel, parent))


def fork_adopted(child: Callable[[int], int]) -> tuple[int, int]:
    """Fork a process that becomes the master's child and leaves with ``child(the middle's
    pid)``; returns its pid and that of the middle process. Raises ``OSError``."""
    read_end, write_end = os.pipe()
    try:
        middle = os.fork()
        if middle == 0:
            _middle(read_end, write_end, child)  # pragma: no cover
        os.close(write_end)
        write_end = -1
        data = os.read(read_end, 8)  # written at once, or nothing when the middle leaves
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    if len(data) != 8:
        os.waitpid(middle, 0)
        raise OSError("the worker could not be forked")
    return int.from_bytes(data, "little"), middle


def _middle(read_end: int, write_end: int, child: Callable[[int], int]) -> NoReturn:
    # Functions of their own after each fork, not inline: a tracer (coverage) installed at
    # fork time only sees frames entered after it (as ``_process._in_child``).
    try:
        os.close(read_end)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _adopted(write_end, child, parent)  # pragma: no cover
        os.write(write_end, pid.to_bytes(8, "little"))
    finally:
        os._exit(0)


def _adopted(write_end: int, child: Callable[[int], int], parent: int) -> NoReturn:
    code = 1
    try:
        os.close(write_end)
        code = child(parent)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _worker(
    spec: TemplateSpec, cls: type[Worker], worker_id: int, channel: socket.socket, parent: int
) -> int:
    spec.link.close()
    cls.after_fork(spec.options)

    def adopted() -> None:  # by then the middle has long left: its exit costs no time
        wait_for_parent(parent, spec.master_pid)
        _process.die_with_parent(spec.master_pid)

    worker = spec.worker_spec(cls, worker_id, channel)
    return _child.run(dataclasses.replace(worker, adopted=adopted))


def _standby(
    spec: TemplateSpec, cls: type[Worker], sock: socket.socket, ours: socket.socket, parent: int
) -> int:
    ours.close()
    spec.link.close()
    prefix = spec.name or "prefork"
    _process.set_title(
        f"{prefix}: {spec.broker} standby gen {spec.generation}", f"{prefix}:{spec.broker}"
    )
    wait_for_parent(parent, spec.master_pid)
    _process.die_with_parent(spec.master_pid)
    message, fds = receive(sock)  # until taken, or the template leaves (the end of it)
    sock.close()
    worker_id = None if message is None else message.get("worker")
    if not isinstance(worker_id, int) or len(fds) != 1:
        return 0
    cls.after_fork(spec.options)
    return _child.run(spec.worker_spec(cls, worker_id, socket.socket(fileno=fds[0])))


def wait_for_parent(middle: int, master: int, timeout: float = REPARENT_TIMEOUT) -> None:
    """Wait until the middle process has left and the master adopted this one (it takes
    moments: the middle leaves as soon as it forked). Raises ``OSError`` if another process
    adopted it (the master is gone) or it takes ``timeout``."""
    deadline = time.monotonic() + timeout
    while (parent := os.getppid()) == middle and time.monotonic() < deadline:
        time.sleep(0.0001)
    if parent != master:
        raise OSError(f"the worker's parent is {parent}, not the master ({master})")

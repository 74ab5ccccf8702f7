"""The master's side of the templates (``_template.py`` is the template's): one link per
template, the fork requests sent on it and the pids that come back.

A worker forked by a template is the master's child once its middle process has left, and may
even be reaped before the template's answer naming it is read (a worker killed at once). So an
unknown child reaped is remembered for a while (``REMEMBER``): when a template then names it,
the worker is reported started and reaped in that order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from prefork.core._events import Event, TemplateExited, TemplateReady
from prefork.master import _template
from prefork.master._process import Reaped

log = logging.getLogger("prefork.master")

#: How long (seconds) and how many unknown children reaped are remembered for a template's
#: late answer.
REMEMBER = 30.0
REMEMBER_MOST = 256


#: The longest thread name a template's report may bring (the rest is cut).
NAME_MAX = 100


@dataclass(frozen=True, slots=True)
class Asked:
    """A worker asked for and not named yet: when, and the master's end of its channel (read
    once the worker is named, so that nothing it says comes before its pid)."""

    at: float
    channel: socket.socket


@dataclass(slots=True)
class TemplateLink:
    """The master's end of one template's link, and the requests it has not answered."""

    broker: str
    generation: int
    pid: int
    sock: socket.socket
    error: str = ""  # what it said when it could not import
    asked: dict[int, Asked] = field(default_factory=dict)  # by worker id
    signals: dict[int, int] = field(default_factory=dict)  # for workers not named yet


class TemplatePool:
    """Every template of the master, by broker and generation.

    ``spawned(worker_id, pid, channel, reaped)`` is called when a template names the worker it
    forked (``channel``: the master's end; ``reaped``: it was reaped already),
    ``failed(worker_id, reason, backoff)`` when it could not (``backoff``: the worker's
    failure, not its template's death)."""

    def __init__(
        self,
        selector: selectors.BaseSelector,
        post: Callable[[Event], None],
        spawned: Callable[[int, int, socket.socket, Reaped | None], None],
        failed: Callable[[int, str, bool], None],
    ) -> None:
        self._selector = selector
        self._post = post
        self._spawned = spawned
        self._failed = failed
        self._links: dict[tuple[str, int], TemplateLink] = {}
        self._by_pid: dict[int, TemplateLink] = {}
        self.pids: dict[tuple[str, int], int] = {}  # each template's, until reaped
        self.standbys: dict[tuple[str, int], int] = {}  # each template's standby worker's pid
        self._unknown: dict[int, tuple[Reaped, float]] = {}  # children reaped, not ours yet

    def fds(self) -> list[int]:
        """The links' fds and the channels of workers not named yet (a newly forked process
        closes them)."""
        fds = [link.sock.fileno() for link in self._links.values() if link.sock.fileno() >= 0]
        return fds + [
            a.channel.fileno() for link in self._links.values() for a in link.asked.values()
        ]

    def start(
        self, broker: str, generation: int, fork: Callable[[socket.socket, int], int]
    ) -> None:
        """Fork a template: ``fork(its end of the link, the fd of ours)`` returns its pid."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = fork(theirs, ours.fileno())
        except OSError as exc:
            ours.close()
            self._post(TemplateExited(broker, generation, None, None, str(exc)))
            return
        finally:
            theirs.close()
        self._add(broker, generation, pid, ours)
        log.info("[%s] template of generation %d (pid %d) is importing", broker, generation, pid)

    def adopt(self, broker: str, generation: int, pid: int, sock: socket.socket) -> str:
        """Take the link of the template a worker forked from itself (a refork), running as
        ``pid``; returns "" when taken, else why not (``sock`` is then closed)."""
        why = ""
        if (broker, generation) in self._links:
            why = f"generation {generation} has a template already"
        elif (sock.family, sock.type) != (socket.AF_UNIX, socket.SOCK_SEQPACKET):
            why = "what it passed is not a template's link"
        if why:
            sock.close()
            return why
        self._add(broker, generation, pid, sock)
        return ""

    def reaped_already(self, pid: int) -> bool:
        """Whether ``pid`` was reaped before anyone named it (a template a worker forked that
        died at once)."""
        return pid in self._unknown

    def _add(self, broker: str, generation: int, pid: int, ours: socket.socket) -> None:
        ours.setblocking(False)
        link = self._links[(broker, generation)] = TemplateLink(broker, generation, pid, ours)
        self._by_pid[pid] = link
        self.pids[(broker, generation)] = pid
        self._selector.register(ours, selectors.EVENT_READ, link)

    def stop(self, broker: str, generation: int, kill: bool) -> None:
        """Close the template's link (it leaves at its end), or ``kill`` it."""
        link = self._links.get((broker, generation))
        if link is None:
            return  # reaped already: its exit is on its way to the supervisor
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(link.pid, signal.SIGKILL)
        else:
            self._close(link)

    def request(self, worker_id: int, broker: str, generation: int, now: float) -> str:
        """Ask the template of ``generation`` to fork worker ``worker_id``, with a new channel;
        returns "" when asked, else why it could not be."""
        link = self._links.get((broker, generation))
        if link is None or link.sock.fileno() < 0:
            return f"the template of generation {generation} is gone"
        ours, theirs = socket.socketpair()
        try:
            _template.send(link.sock, {"worker": worker_id}, theirs.fileno())
        except OSError as exc:
            ours.close()
            return f"the template of generation {generation} could not be asked: {exc}"
        finally:
            theirs.close()
        link.asked[worker_id] = Asked(now, ours)
        return ""

    def signal(self, worker_id: int, signum: int) -> bool:
        """Send ``signum`` to a worker asked for but not named yet, once it is; False if no
        template was asked for it."""
        for link in self._links.values():
            if worker_id in link.asked:
                link.signals[worker_id] = signum
                return True
        return False

    def read(self, link: TemplateLink) -> None:
        """Take in what the template said: ready, its import error, the workers it forked."""
        while link.sock.fileno() >= 0:
            try:
                message, fds = _template.receive(link.sock)
            except BlockingIOError:
                return
            except ConnectionResetError:
                # It left with requests unread; the kernel says so once, then gives what it
                # sent before (its import error, say).
                continue
            except (OSError, ValueError) as exc:  # reset, or not JSON: it is not well
                log.error("[%s] template %d: %s; killing it", link.broker, link.pid, exc)
                self.stop(link.broker, link.generation, kill=True)
                self._close(link)
                return
            for fd in fds:  # a template sends none
                os.close(fd)
            if message is None:
                self._close(link)
                return
            self._take(link, message)

    def _take(self, link: TemplateLink, message: dict[str, object]) -> None:
        worker_id = message.get("worker")
        key = (link.broker, link.generation)
        if message.get("ready") is True:
            threads, sockets = message.get("threads"), message.get("sockets")
            # A sick template's report must not make a log line of megabytes: names are cut.
            names = (
                tuple(t[:NAME_MAX] for t in threads if isinstance(t, str))
                if isinstance(threads, list)
                else ()
            )
            count = sockets if type(sockets) is int and sockets >= 0 else 0
            self._post(TemplateReady(link.broker, link.generation, names, count))
        elif isinstance(standby := message.get("standby"), int):
            self.standbys[key] = standby
        elif isinstance(error := message.get("error"), str) and worker_id is None:
            link.error = error
        elif isinstance(worker_id, int) and worker_id in link.asked:
            asked = link.asked.pop(worker_id)
            pid = message.get("pid")
            if not isinstance(pid, int):
                asked.channel.close()
                why = f"the template could not fork it: {message.get('error')}"
                self._failed(worker_id, why, True)
                return
            if self.standbys.get(key) == pid:
                del self.standbys[key]  # taken: the next one is announced when forked
            dead, reaped_at = self._unknown.pop(pid, (None, 0.0))
            self._spawned(worker_id, pid, asked.channel, dead if reaped_at >= asked.at else None)
            if (signum := link.signals.pop(worker_id, None)) is not None and dead is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    def reaped(self, dead: Reaped, now: float) -> None:
        """A child that is not a known worker was reaped: a template, or maybe a worker a
        template has not named yet (remembered a while), or someone else's."""
        link = self._by_pid.pop(dead.pid, None)
        if link is None:
            self._unknown[dead.pid] = (dead, now)
            for pid, (_, at) in list(self._unknown.items()):
                if now - at > REMEMBER or len(self._unknown) > REMEMBER_MOST:
                    del self._unknown[pid]
            return
        self.read(link)  # its last words (an import error) came before its exit
        self._close(link)
        del self._links[(link.broker, link.generation)]
        del self.pids[(link.broker, link.generation)]
        self.standbys.pop((link.broker, link.generation), None)
        gone = f"the template of generation {link.generation} exited before it forked the worker"
        for worker_id, asked in link.asked.items():
            asked.channel.close()
            self._failed(worker_id, gone, False)
        self._post(
            TemplateExited(link.broker, link.generation, dead.exit_code, dead.signal, link.error)
        )

    def close_all(self) -> None:
        for link in self._links.values():
            self._close(link)

    def _close(self, link: TemplateLink) -> None:
        self.standbys.pop((link.broker, link.generation), None)  # it leaves with its template
        if link.sock.fileno() >= 0:
            self._selector.unregister(link.sock)
            link.sock.close()

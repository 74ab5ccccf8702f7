"""Small servers inside the master's select loop: the control socket and the metrics endpoint.

The master never blocks and never starts a thread, so these are non-blocking sockets on its
selector. Whatever their clients do, each server is bounded:

- at most ``MAX_PEERS`` connections; when full, a new connection takes the place of the peer
  that has waited longest without a whole request (a full house of idle or slow peers cannot
  lock the owner out);
- at most ``MAX_INPUT`` bytes of a request, read at most once per peer per loop turn;
- time: a connection that sends nothing is closed ``IDLE_TIMEOUT`` after it connected or was
  last answered; a request must be whole ``REQUEST_TIMEOUT`` after its first byte (sending a
  byte now and then does not keep a slot); an answer is written for as long as the peer keeps
  reading (``WRITE_TIMEOUT`` without progress drops it), a long one produced piece by piece as
  the socket takes it, so a slow reader still gets all of it and the master never holds more
  than ``LOW_WATER`` plus one piece of it.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import selectors
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, assert_never

log = logging.getLogger("prefork.master")
READ_CHUNK = 65536
LOG_EVERY = 60.0  # seconds between two log lines of one server for one reason


class Phase(enum.Enum):
    """Where a peer is, derived from its buffers; each phase has its own deadline."""

    IDLE = "idle"  # no byte of a request yet: IDLE_TIMEOUT from connecting or the last answer
    READING = "reading"  # part of a request: REQUEST_TIMEOUT from its first byte
    WRITING = "writing"  # an answer going out: WRITE_TIMEOUT from the last progress
    HELD = "held"  # waiting for an answer the master gives later: no deadline


class Peer:
    """One client connection of a ``SideServer``."""

    __slots__ = ("closing", "held", "input", "output", "rest", "since", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.input = bytearray()
        self.output = bytearray()
        self.rest: Iterator[bytes] | None = None  # the answer's pieces not made yet
        self.held = False  # its request is answered later (``SideServer.hold``)
        self.closing = False  # close once the answer is written
        self.since = now  # when its phase began (for WRITING: the last progress)

    @property
    def phase(self) -> Phase:
        if self.output or self.rest is not None:
            return Phase.WRITING
        if self.held:
            return Phase.HELD
        return Phase.READING if self.input else Phase.IDLE


class Complaints:
    """The log lines of peers a server closed for what they did: one line per reason at once,
    the same reason again within ``LOG_EVERY`` seconds only counted and told with the next
    line, so that a flood of bad peers cannot flood the log."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._last: dict[str, float] = {}
        self._unsaid: dict[str, int] = {}

    def tell(self, reason: str, now: float) -> None:
        last = self._last.get(reason)
        if last is not None and now - last < LOG_EVERY:
            self._unsaid[reason] = self._unsaid.get(reason, 0) + 1
            return
        self._last[reason] = now
        more = self._unsaid.pop(reason, 0)
        also = f" ({more} more since the last such line)" if more else ""
        log.warning("%s: closed a connection that %s%s", self.server, reason, also)


class SideServer:
    """A listening socket on the master's selector and its peers. Subclasses read requests
    from ``peer.input`` in ``received`` and answer with ``send``."""

    NAME = "side server"  # for the log
    MAX_PEERS = 16
    MAX_INPUT = 65536
    IDLE_TIMEOUT = 10.0
    REQUEST_TIMEOUT = 10.0
    WRITE_TIMEOUT = 10.0
    LOW_WATER = 65536  # an answer's next piece is made when less than this waits to go out

    def __init__(self, listener: socket.socket, selector: selectors.BaseSelector) -> None:
        listener.setblocking(False)
        listener.set_inheritable(False)
        self.listener = listener
        self.selector = selector
        self.peers: dict[socket.socket, Peer] = {}
        self.complaints = Complaints(self.NAME)
        selector.register(listener, selectors.EVENT_READ, self)

    # -- what subclasses decide ------------------------------------------------------------

    def admit(self, sock: socket.socket) -> str:
        """Why ``sock``'s peer is refused ("": it is not)."""
        return ""

    def refused(self, peer: Peer, reason: str) -> None:
        """Tell a refused peer why (it is closed after)."""

    def received(self, peer: Peer) -> None:
        """New bytes are in ``peer.input``."""

    def overflowed(self, peer: Peer) -> None:
        """``peer.input`` passed ``MAX_INPUT`` without a complete request (it is closed)."""

    # -- the selector's side ---------------------------------------------------------------

    def fds(self) -> list[int]:
        """Every fd of this server (a forked worker closes them)."""
        return [self.listener.fileno(), *(s.fileno() for s in self.peers)]

    def ready(self, sock: socket.socket, mask: int) -> None:
        """The selector says ``sock`` (the listener or a peer) is ready."""
        if sock is self.listener:
            self._accept()
            return
        peer = self.peers.get(sock)
        if peer is None:
            return
        if mask & selectors.EVENT_WRITE:
            self._flush(peer)
        if mask & selectors.EVENT_READ and peer.sock in self.peers:
            self._read(peer)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:  # gone before we took it, or out of fds: the next turn tries again
            return
        sock.setblocking(False)
        sock.set_inheritable(False)
        now = time.monotonic()
        if len(self.peers) >= self.MAX_PEERS:
            victim = self._evictable()
            if victim is None:
                sock.close()
                self.complaints.tell(f"came while {self.MAX_PEERS} waited for answers", now)
                return
            why = "was being answered slowest" if victim.phase is Phase.WRITING else "waited"
            self.complaints.tell(f"{why} when a new one came to a full house", now)
            self.drop(victim)
        peer = Peer(sock, now)
        self.peers[sock] = peer
        self.selector.register(sock, selectors.EVENT_READ, self)
        reason = self.admit(sock)
        if reason:
            self.refused(peer, reason)
            self.send(peer, b"", close=True)

    def _evictable(self) -> Peer | None:
        """The peer a new connection replaces: the one that has waited longest for a whole
        request, else the one whose answer has gone out slowest; a held peer never (its
        request was taken)."""
        for phases in ((Phase.IDLE, Phase.READING), (Phase.WRITING,)):
            waiting = [p for p in self.peers.values() if p.phase in phases]
            if waiting:
                return min(waiting, key=lambda p: p.since)
        return None

    def _read(self, peer: Peer) -> None:
        try:
            data = peer.sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop(peer)
            return
        if peer.closing:
            return  # answered already; what else it sends is not read
        before, unread = peer.phase, len(peer.input) + len(data)
        peer.input += data
        self.received(peer)
        if peer.sock not in self.peers:
            return
        if len(peer.input) > self.MAX_INPUT and not peer.closing:
            why = f"sent a request of more than {self.MAX_INPUT} bytes"
            self.complaints.tell(why, time.monotonic())
            self.overflowed(peer)
            self.send(peer, b"", close=True)
        elif peer.phase is not before or len(peer.input) < unread:
            peer.since = time.monotonic()  # a new phase, or a new request (one was taken)

    def send(
        self,
        peer: Peer,
        data: bytes,
        *,
        close: bool = False,
        rest: Iterator[bytes] | None = None,
    ) -> None:
        """Queue ``data`` for ``peer`` and write what its socket takes now; ``rest`` is the
        answer's remaining pieces, made as the socket takes what is before them (``close``:
        then close the connection)."""
        if peer.sock not in self.peers:
            return  # gone meanwhile (an answer that waited for a reload)
        if peer.phase is not Phase.WRITING:
            peer.since = time.monotonic()
        peer.output += data
        if rest is not None:
            peer.rest = rest
        peer.closing = peer.closing or close
        self._flush(peer)

    def hold(self, peer: Peer) -> None:
        """``peer``'s request is answered later (``release``): no deadline meanwhile."""
        peer.held = True

    def release(self, peer: Peer) -> None:
        peer.held = False
        peer.since = time.monotonic()

    def _flush(self, peer: Peer) -> None:
        while peer.rest is not None and len(peer.output) < self.LOW_WATER:
            piece = next(peer.rest, None)
            if piece is None:
                peer.rest = None
            else:
                peer.output += piece
        try:
            sent = peer.sock.send(peer.output) if peer.output else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self.drop(peer)
            return
        if sent:
            del peer.output[:sent]
            peer.since = time.monotonic()
        if peer.phase is not Phase.WRITING and peer.closing:
            self.drop(peer)
            return
        writing = peer.phase is Phase.WRITING
        mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
        self.selector.modify(peer.sock, mask, self)

    def drop(self, peer: Peer) -> None:
        """Close ``peer`` (whatever it was waiting for)."""
        if self.peers.pop(peer.sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):  # the teardown must close every peer
            self.selector.unregister(peer.sock)
        peer.sock.close()
        peer.rest = None

    # -- an in-place upgrade ----------------------------------------------------------------

    def export(self, carry: Callable[[socket.socket], int]) -> dict[str, Any]:
        """This server as plain data for the next image of the master (``prefork ctl
        upgrade``): its listener and each peer with what it sent unanswered and what waits
        to go out (``carry`` keeps a socket open across the exec and gives its number). A
        peer whose answer is still being made piece by piece (a scrape) is left out: the exec
        closes it, and the scraper asks again."""
        peers = [
            {
                "fd": carry(p.sock),
                "input": p.input.hex(),
                "output": p.output.hex(),
                "held": p.held,
                "closing": p.closing,
                "since": p.since,
            }
            for p in self.peers.values()
            if p.rest is None
        ]
        return {"fd": carry(self.listener), "peers": peers}

    def adopt(self, peers: Iterable[Mapping[str, Any]]) -> dict[int, Peer]:
        """Take the peers ``export`` gave (this server's listener was made from its ``fd``:
        ``adopted``); returns them by their socket's number. Raises ``ValueError``,
        ``KeyError``, ``TypeError`` or ``OSError`` for one that does not fit."""
        taken = {}
        for doc in peers:
            peer = Peer(adopted(int(doc["fd"])), float(doc["since"]))
            peer.sock.setblocking(False)
            peer.input += bytes.fromhex(doc["input"])
            peer.output += bytes.fromhex(doc["output"])
            peer.held, peer.closing = doc["held"] is True, doc["closing"] is True
            self.peers[peer.sock] = peer
            self.selector.register(peer.sock, selectors.EVENT_READ, self)
            taken[peer.sock.fileno()] = peer
            if peer.output or peer.closing:
                self._flush(peer)
        return taken

    # -- deadlines -------------------------------------------------------------------------

    def deadline_of(self, peer: Peer) -> float | None:
        """When ``peer`` is closed unless something happens first (None: never)."""
        match peer.phase:
            case Phase.IDLE:
                return peer.since + self.IDLE_TIMEOUT
            case Phase.READING:
                return peer.since + self.REQUEST_TIMEOUT
            case Phase.WRITING:
                return peer.since + self.WRITE_TIMEOUT
            case Phase.HELD:
                return None
            case _:
                assert_never(peer.phase)

    def deadline(self) -> float | None:
        """The earliest deadline of a peer, or None."""
        times = [d for p in self.peers.values() if (d := self.deadline_of(p)) is not None]
        return min(times, default=None)

    def expire(self, now: float) -> None:
        """Close the peers past their deadline."""
        for peer in list(self.peers.values()):
            deadline = self.deadline_of(peer)
            if deadline is not None and now >= deadline:
                self._expired(peer, now)
                self.drop(peer)

    def _expired(self, peer: Peer, now: float) -> None:
        if peer.phase is Phase.READING:
            why = f"sent no whole request within {self.REQUEST_TIMEOUT:g}s of its first byte"
            self.complaints.tell(why, now)
        elif peer.phase is Phase.WRITING:
            self.complaints.tell(f"read nothing of its answer for {self.WRITE_TIMEOUT:g}s", now)
        else:  # idle (a held peer has no deadline): an ordinary end, nothing more to ask
            log.debug("%s: closed a connection idle for %gs", self.NAME, self.IDLE_TIMEOUT)

    def close(self) -> None:
        for peer in list(self.peers.values()):
            self.drop(peer)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)
        self.listener.close()


def adopted(fd: int) -> socket.socket:
    """The socket open at ``fd``, carried across an in-place upgrade, not inheritable from
    now on (``OSError`` if ``fd`` is not an open socket)."""
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    return sock

"""Small servers inside the master's select loop: the control socket and the metrics endpoint.

The master never blocks and never starts a thread, so these are non-blocking sockets on its
selector. Each is bounded whatever its clients do: a few connections at once (more are closed
on accept), a bounded input per connection (``MAX_INPUT``), an idle deadline, and at most one
read per connection per loop turn, so no client can starve the workers' channels or the
signals.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time

READ_CHUNK = 65536


class Peer:
    """One client connection of a ``SideServer``."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.input = bytearray()
        self.output = bytearray()
        self.deadline = deadline  # 0.0: none (held: the server answers when it can)
        self.closing = False  # close once the output is written


class SideServer:
    """A listening socket on the master's selector and its peers. Subclasses read requests
    from ``peer.input`` in ``received`` and answer with ``send``."""

    MAX_PEERS = 16
    MAX_INPUT = 65536
    IDLE_TIMEOUT = 10.0

    def __init__(self, listener: socket.socket, selector: selectors.BaseSelector) -> None:
        listener.setblocking(False)
        listener.set_inheritable(False)
        self.listener = listener
        self.selector = selector
        self.peers: dict[socket.socket, Peer] = {}
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
        if len(self.peers) >= self.MAX_PEERS:
            sock.close()
            return
        peer = Peer(sock, time.monotonic() + self.IDLE_TIMEOUT)
        self.peers[sock] = peer
        self.selector.register(sock, selectors.EVENT_READ, self)
        reason = self.admit(sock)
        if reason:
            self.refused(peer, reason)
            self.send(peer, b"", close=True)

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
        peer.input += data
        if peer.deadline:
            peer.deadline = time.monotonic() + self.IDLE_TIMEOUT
        self.received(peer)
        if len(peer.input) > self.MAX_INPUT and peer.sock in self.peers and not peer.closing:
            self.overflowed(peer)
            self.send(peer, b"", close=True)

    def send(self, peer: Peer, data: bytes, *, close: bool = False) -> None:
        """Queue ``data`` for ``peer`` and write what its socket takes now (``close``: then
        close the connection)."""
        if peer.sock not in self.peers:
            return  # gone meanwhile (an answer that waited for a reload)
        peer.output += data
        peer.closing = peer.closing or close
        self._flush(peer)

    def _flush(self, peer: Peer) -> None:
        try:
            sent = peer.sock.send(peer.output) if peer.output else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self.drop(peer)
            return
        del peer.output[:sent]
        if not peer.output and peer.closing:
            self.drop(peer)
            return
        mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.output else 0)
        self.selector.modify(peer.sock, mask, self)

    def drop(self, peer: Peer) -> None:
        """Close ``peer`` (whatever it was waiting for)."""
        if self.peers.pop(peer.sock, None) is None:
            return
        self.selector.unregister(peer.sock)
        peer.sock.close()

    # -- deadlines -------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """The earliest idle deadline of a peer, or None."""
        return min((p.deadline for p in self.peers.values() if p.deadline), default=None)

    def expire(self, now: float) -> None:
        """Close the peers idle past their deadline."""
        for peer in list(self.peers.values()):
            if peer.deadline and now >= peer.deadline:
                self.drop(peer)

    def close(self) -> None:
        for peer in list(self.peers.values()):
            self.drop(peer)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)
        self.listener.close()

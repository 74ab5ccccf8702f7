"""The control socket: a unix socket in the master, mode 0600, that ``prefork ctl`` talks to
(the protocol is ``_control_protocol.py``).

Only the master's own user (and root) may use it: the file's mode keeps others from
connecting, and the peer's credentials (SO_PEERCRED) are checked as well, in case the file's
mode or directory were opened up.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
from collections.abc import Callable, Collection

from prefork.ops import _control_protocol as protocol
from prefork.ops._side import Peer, SideServer

_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

#: What the master does with a request: the answer line, or None to answer later (``answer``).
Handler = Callable[[Peer, protocol.Request], bytes | None]


class ControlServer(SideServer):
    """Reads request lines, asks ``handler`` for the answers, writes them in order."""

    NAME = "control socket"
    MAX_INPUT = 65536  # one request line, at most
    MAX_OUTPUT = 1 << 20  # answers a client leaves unread: past this it is dropped
    IDLE_TIMEOUT = 60.0  # between requests (ctl status --watch asks every second)

    def __init__(
        self,
        listener: socket.socket,
        selector: selectors.BaseSelector,
        handler: Handler,
        brokers: Collection[str],
        *,
        uids: Collection[int] | None = None,
    ) -> None:
        super().__init__(listener, selector)
        self.path = listener.getsockname()
        self._inode = os.stat(self.path).st_ino
        self._handler = handler
        self._brokers = brokers
        self._uids = {os.geteuid(), 0} if uids is None else set(uids)

    def admit(self, sock: socket.socket) -> str:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
        _, uid, _ = _CRED.unpack(creds)
        if uid in self._uids:
            return ""
        return f"refused: uid {uid} may not control this master (its user's and root's only)"

    def refused(self, peer: Peer, reason: str) -> None:
        self.send(peer, protocol.refusal(reason))

    def overflowed(self, peer: Peer) -> None:
        self.send(peer, protocol.refusal(f"a request line is at most {self.MAX_INPUT} bytes"))

    def received(self, peer: Peer) -> None:
        # Requests are answered in order: while one waits (reload --wait), the next waits too.
        while not peer.held and not peer.closing:
            end = peer.input.find(b"\n")
            if end < 0:
                return
            line = bytes(peer.input[:end])
            del peer.input[: end + 1]
            try:
                request = protocol.parse(line, self._brokers)
            except protocol.ProtocolError as exc:
                self.send(peer, protocol.refusal(str(exc)))
                continue
            reply = self._handler(peer, request)
            if reply is None:
                self.hold(peer)
            else:
                self.send(peer, reply)
            if len(peer.output) > self.MAX_OUTPUT:
                self.drop(peer)  # it asks and does not read

    def answer(self, peer: Peer, reply: bytes) -> None:
        """The answer a held request waited for; the requests after it go on."""
        self.release(peer)
        self.send(peer, reply)
        if peer.sock in self.peers:
            self.received(peer)

    def close(self) -> None:
        """Close every connection and the socket; its file goes, if it is still ours."""
        super().close()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

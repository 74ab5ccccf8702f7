"""Flow control of one connection (uvicorn's ``FlowControl``): whether reading and writing are
paused, and the one writer waiting for the transport to take more.

The connection pauses reading when too much request body (or pipelined backlog) waits for the
app, and while a response the client has not read fills the transport; the transport pauses
our writing when the client does not read. Timeouts are not kept here: the connection's
deadlines bound both.

A close sends its FIN at once (``send_fin``) when the transport holds nothing unsent, not at
uvloop's next loop turn, after every other connection of this wake-up: a client that reads our
response before our FIN arrives closes first and keeps the TIME_WAIT. Under ``Connection:
close`` load from one host that filled the client's ephemeral ports (14,000 in TIME_WAIT), and
each of its connect() calls then searched them: wrk's kernel time per connection tripled and
the worker idled 30% of the time waiting for it (one worker, wrk -c64: 17,400 req/s; with the
early FIN 26,500-30,800 and no idle time, the TIME_WAITs on the server's side, as granian's).
"""

from __future__ import annotations

import _socket  # the C socket type: no Python-level __init__ (0.3 us, not 0.7)
import asyncio
import socket

#: Reading pauses while this much request body waits for the app (and a pipelined backlog).
BODY_BUFFER = 65536


class FlowControl:
    """Pause state of both directions of one transport, and the drain waiter."""

    __slots__ = (
        "_fd",
        "_loop",
        "_transport",
        "_waiter",
        "closed",
        "read_paused",
        "write_paused",
    )

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, fd: int | None = None
    ) -> None:
        """``fd``: the connection's socket under ``transport``, for an early FIN (None: with
        TLS, whose close_notify must come first, or when the transport's socket is unknown)."""
        self._transport = transport
        self._loop = loop
        self._fd = fd
        self._waiter: asyncio.Future[None] | None = None
        self.read_paused = False
        self.write_paused = False
        self.closed = False

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    async def drain(self) -> None:
        """Wait until the transport takes more data (or the connection is gone)."""
        if self.write_paused and not self.closed:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        """The connection is closing: ``drain()`` no longer waits.

        A writer already waiting goes on waiting for the transport to flush or go
        (``lost()``); the connection's write deadline bounds that.
        """
        self.closed = True

    def lost(self) -> None:
        """The connection is gone (or aborted): release the waiting writer too."""
        self.closed = True
        self._wake_writer()

    def end(self, abort: bool) -> None:
        """Close the transport: at once (``abort``: what the client has not read is dropped,
        the waiting writer released) or once it has flushed (``close()``; with nothing left
        to flush, the FIN goes now: module docstring)."""
        transport = self._transport
        if abort:
            self.lost()
            transport.abort()
            return
        self.closed = True  # close(), inline
        # Not once the transport is closing: uvloop may have closed the fd, and its number may
        # already be another connection's.
        fd = self._fd
        if fd is not None and not transport.is_closing() and not transport.get_write_buffer_size():
            send_fin(fd)
        transport.close()

    def _wake_writer(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def send_fin(fd: int) -> None:
    """shutdown(SHUT_WR) on ``fd``: what was written is followed by a FIN now. A client
    already gone (ENOTCONN) is no error: the close that follows ends the connection anyway."""
    sock = _socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)  # any family: shutdown()
    try:  # only passes the fd to the kernel
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.detach()  # the fd stays the transport's

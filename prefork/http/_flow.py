"""Flow control of one connection (uvicorn's ``FlowControl``): whether reading and writing are
paused, and the one writer waiting for the transport to take more.

The connection pauses reading when too much request body (or pipelined backlog) waits for the
app, and while a response the client has not read fills the transport; the transport pauses
our writing when the client does not read. Timeouts are not kept here: the connection's
deadlines bound both.
"""

from __future__ import annotations

import asyncio

#: Reading pauses while this much request body waits for the app (and a pipelined backlog).
BODY_BUFFER = 65536


class FlowControl:
    """Pause state of both directions of one transport, and the drain waiter."""

    __slots__ = ("_loop", "_transport", "_waiter", "closed", "read_paused", "write_paused")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
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
        the waiting writer released) or once it has flushed (``close()``)."""
        if abort:
            self.lost()
            self._transport.abort()
        else:
            self.close()
            self._transport.close()

    def _wake_writer(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

"""The ASGI app's side of one WebSocket: ``receive()`` and ``send()`` with the message order
checked, the messages waiting for the app, the ``websocket.disconnect`` it is told, and the end
of its coroutine.

``WebSocketProtocol`` (``_websocket.py``) owns the bytes: frames, phases, the closing
handshake, deadlines, pings, drain. A ``WebSocketSession`` is to it what a ``Cycle``
(``_asgi.py``) is to ``HTTPProtocol``: it is given what it uses (the transport, the
connection's ``FlowControl``, the loop) and, as ``SocketSide``, the few operations only the
protocol performs (answer the handshake, frame a message, close, read on, settle the app's
end). The protocol tells the session what happens through its methods (``message_received``,
``closed``, ``drop_messages``) and asks ``queue_full`` before it parses more: the queue is full
with ``max_queue`` messages or ``max_bytes`` bytes of them (``ws_max_size``: one message of the
largest size), whichever comes first.

``WSPhase`` is defined here, below the protocol, because the message-order checks read it; only
the protocol moves between phases (their meaning: ``_websocket.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from enum import Enum
from typing import Any, Protocol

from prefork.http._asgi import ClientDisconnected, Cycle, Message
from prefork.http._flow import FlowControl

logger = logging.getLogger("prefork.http")

_CONNECT: Message = {"type": "websocket.connect"}


class WSPhase(Enum):
    """Where a WebSocket is, from the handshake request on (``_websocket.py`` says each)."""

    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSING = "closing"
    RESPONDING = "responding"
    CLOSED = "closed"


HANDSHAKE, OPEN, CLOSING, RESPONDING, CLOSED = WSPhase


class SocketSide(Protocol):
    """What a session asks of its ``WebSocketProtocol``, the side that writes the bytes.

    One typed interface rather than a ``Cycle``'s loose callbacks: seven of them would make the
    constructor the longest part, and mypy checks the protocol against this list."""

    @property
    def phase(self) -> WSPhase: ...

    def accept(self, message: Message) -> None: ...
    def refuse(self) -> None: ...
    def deny(self) -> Cycle: ...
    def send_message(self, data: str | bytes) -> None: ...
    def close(self, code: int, reason: str) -> None: ...
    def room_again(self) -> None: ...
    def app_ended(self, failed: bool) -> None: ...


class WebSocketSession:
    """One WebSocket's ASGI ``receive`` and ``send`` callables and their state."""

    def __init__(
        self,
        scope: dict[str, Any],
        socket: SocketSide,
        transport: asyncio.Transport,
        flow: FlowControl,
        loop: asyncio.AbstractEventLoop,
        max_queue: int,
        max_bytes: int,
    ) -> None:
        self.scope = scope
        self._socket = socket
        self._transport = transport
        self._flow = flow
        self._loop = loop
        self._max_queue = max_queue
        self._max_bytes = max_bytes
        # What waits for the app's receive(), each message with its size in bytes (UTF-8 for
        # a text one), and the sum of those sizes.
        self.queue: deque[tuple[Message, int]] = deque(((_CONNECT, 0),))
        self.queued_bytes = 0
        self.waiter: asyncio.Future[None] | None = None
        self.disconnect: Message | None = None  # what receive() gives once the socket ended
        self.app_closed = False  # the app sent websocket.close
        self._denial: Cycle | None = None  # frames the app's denial response (``deny``)

    # -- events from the protocol ----------------------------------------------------------

    def message_received(self, data: str | bytes, size: int) -> None:
        """A whole message of ``size`` bytes arrived: ``receive`` hands it to the app."""
        kind = "text" if type(data) is str else "bytes"
        self.queue.append(({"type": "websocket.receive", kind: data}, size))
        self.queued_bytes += size
        self._wake()

    def queue_full(self) -> bool:
        """Whether ``max_queue`` messages, or ``max_bytes`` bytes of them, wait for the app
        (the protocol parses no more until it takes one)."""
        return len(self.queue) >= self._max_queue or self.queued_bytes >= self._max_bytes

    def closed(self, code: int, reason: str) -> None:
        """From now on ``receive()`` gives ``websocket.disconnect`` (after what is queued)."""
        if self.disconnect is None:
            self.disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._wake()

    def drop_messages(self) -> None:
        """The connection is closing: what the app has not taken yet never reaches it."""
        self.queue.clear()
        self.queued_bytes = 0

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the app's side --------------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            queue = self.queue
            if queue:
                full = self.queue_full()
                message, size = queue.popleft()
                self.queued_bytes -= size
                if full and self._socket.phase is OPEN:  # (it parses only if there is room)
                    self._socket.room_again()  # what waits in wsproto's buffer comes first
                return message
            if self.disconnect is not None:
                return self.disconnect
            self.waiter = self._loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        socket = self._socket
        phase = socket.phase
        if phase is OPEN and not self._transport.is_closing():
            if kind == "websocket.send":
                await self._send_data(message)
            elif kind == "websocket.close":
                code = message.get("code") or 1000
                if type(code) is not int or not 1000 <= code <= 4999:
                    raise ValueError(f"websocket.close 'code' must be an int 1000-4999: {code!r}")
                self.app_closed = True
                self.drop_messages()
                socket.close(code, message.get("reason") or "")
            else:
                raise RuntimeError(f"Unexpected ASGI message {kind!r} after websocket.accept.")
        elif phase is HANDSHAKE:
            if kind == "websocket.accept":
                socket.accept(message)
            elif kind == "websocket.close":
                socket.refuse()
            elif kind == "websocket.http.response.start":
                denial = self._denial = socket.deny()
                await denial.send({**message, "type": "http.response.start"})
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start', but got {kind!r}."
                )
        elif phase is RESPONDING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"Expected 'websocket.http.response.body', but got {kind!r}.")
            assert self._denial is not None
            await self._denial.send({**message, "type": "http.response.body"})
        elif self.app_closed:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} after websocket.close.")
        else:
            raise ClientDisconnected("the WebSocket is closed")

    async def _send_data(self, message: Message) -> None:
        data = message.get("bytes")
        if data is None:
            data = message.get("text")
            if not isinstance(data, str):
                raise TypeError("websocket.send needs 'bytes' (bytes) or 'text' (str)")
        elif isinstance(data, bytearray | memoryview):
            data = bytes(data)
        elif not isinstance(data, bytes):
            raise TypeError(f"websocket.send 'bytes' must be bytes, not {type(data).__name__}")
        self._socket.send_message(data)
        if self._flow.write_paused:  # the client does not read: wait until it does
            await self._flow.drain()
            if self._socket.phase is CLOSED:
                raise ClientDisconnected("the WebSocket is closed")

    # -- running the app -------------------------------------------------------------------

    def app_returned(self, result: object) -> None:
        """The app's coroutine ended normally."""
        if result is not None:
            logger.error("ASGI callable should return None, but returned %r.", result)
        self._socket.app_ended(failed=result is not None)

    def app_failed(self, exc: BaseException) -> None:
        """The app raised ``exc``."""
        if self._socket.phase is CLOSED and isinstance(exc, OSError | asyncio.CancelledError):
            logger.debug("the WebSocket closed under the app: %r", exc)
        else:
            logger.error("Exception in ASGI application", exc_info=exc)
        self._socket.app_ended(failed=True)

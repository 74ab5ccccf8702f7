"""ASGI glue for one request: ``receive``/``send`` with the message order checked,
and running the app (with its errors turned into a 500 or a closed connection).

The connection (``_connection.py``) owns the bytes; a ``Cycle`` owns one request/response. A
cycle is given what it uses (uvicorn's ``RequestResponseCycle``): the transport to write to,
the connection's ``FlowControl``, the worker's ``Stats`` (it counts the bytes it writes), and
three callbacks for what only the connection decides (``on_response_complete``,
``on_body_consumed``, ``on_abort``). The connection tells the cycle what happens through its
methods (``body_received``, ``body_complete``, ``disconnect``, ...).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from prefork.http import _framing
from prefork.http._flow import FlowControl
from prefork.http._framing import CHUNKED, LENGTH, NO_BODY
from prefork.http._stats import Stats

if TYPE_CHECKING:
    pass

logger = logging.getLogger("prefork.http")

Message = dict[str, Any]
ASGIApp = Callable[..., Any]

_DISCONNECT: Message = {"type": "http.disconnect"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BIG = 65536


class AppCall(Protocol):
    """What ``run_app`` runs the app for: a ``Cycle``, or a WebSocket."""

    scope: dict[str, Any]

    async def receive(self) -> Message: ...
    async def send(self, message: Message) -> None: ...
    def app_returned(self, result: object) -> None: ...
    def app_failed(self, exc: BaseException) -> None: ...


class AbortCycle(Protocol):
    """The connection's ``abort_cycle``: answer ``status`` if nothing was sent, and close."""

    def __call__(self, cycle: Cycle, status: int = 500) -> None: ...


class ClientDisconnected(OSError):
    """Raised by ``send()`` once the client has gone away (ASGI spec 2.4)."""


class Cycle:
    """One request/response: the ASGI ``receive`` and ``send`` callables and their state."""

    __slots__ = (
        "_flow",
        "_loop",
        "_on_abort",
        "_on_body_consumed",
        "_on_response_complete",
        "_stats",
        "_transport",
        "body",
        "body_size",
        "close",
        "complete",
        "disconnected",
        "expect_continue",
        "final_sent",
        "framing",
        "gone",
        "head_defaults",
        "head_request",
        "http_11",
        "keep_alive",
        "more_body",
        "reason",
        "scope",
        "sent",
        "start",
        "started",
        "status",
        "waiter",
    )

    def __init__(
        self,
        scope: dict[str, Any],
        transport: asyncio.Transport,
        flow: FlowControl,
        loop: asyncio.AbstractEventLoop,
        # By position from the connection (a call with 10 keywords took 0.5 us more per
        # request than by position), by keyword from anywhere else.
        has_body: bool,
        keep_alive: bool,
        expect_continue: bool,
        http_11: bool,
        head_request: bool,
        head_defaults: _framing.HeadDefaults,
        stats: Stats,
        on_response_complete: Callable[[Cycle], None],
        on_body_consumed: Callable[[], None],
        on_abort: AbortCycle,
    ) -> None:
        self.scope = scope
        self._transport = transport
        self._flow = flow
        self._loop = loop
        self._on_response_complete = on_response_complete
        self._on_body_consumed = on_body_consumed
        self._on_abort = on_abort
        self.body: list[bytes] = []
        self.body_size = 0
        self.more_body = has_body
        self.final_sent = False
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.http_11 = http_11
        self.head_request = head_request
        self.head_defaults = head_defaults
        self._stats = stats
        self.started = 0.0  # time.perf_counter() when the app started (0.0: not yet)
        self.disconnected = False  # receive() gives http.disconnect (once the body is read)
        self.gone = False  # the connection is closing or lost: send() raises too
        self.start: Message | None = None
        self.framing: _framing.ResponseHead | None = None
        self.complete = False
        self.close = False
        self.sent = 0
        self.status = 0
        # WSGI's status line reason, as the app gave it (and then its header names too)
        self.reason: bytes | None = None
        self.waiter: asyncio.Future[None] | None = None

    # -- events from the connection --------------------------------------------------------

    def body_received(self, data: bytes) -> None:
        """A piece of the request body arrived: ``receive`` hands it to the app."""
        self.body.append(data)
        self.body_size += len(data)
        self._wake()

    def body_complete(self) -> None:
        """The request body has ended."""
        self.more_body = False
        self._wake()

    def drop_body(self) -> None:
        """The response is complete: what the app did not read of the body is dropped."""
        self.body.clear()
        self.body_size = 0

    def disconnect(self) -> None:
        """The connection is closing or gone: ``receive`` gives ``http.disconnect`` and
        ``send`` raises ``ClientDisconnected``."""
        if not self.gone:
            self.gone = self.disconnected = True
            self._wake()

    def peer_closed(self) -> None:
        """The client closed its side and no request follows this one: ``receive`` gives
        ``http.disconnect`` once the body is read; ``send`` still writes (a client that only
        half-closed reads the answer)."""
        self.disconnected = True
        self._wake()

    def close_after_response(self) -> None:
        """Answer with ``Connection: close`` (the worker is draining)."""
        self.keep_alive = False

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the app's side --------------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            if self.gone or self.complete:
                return _DISCONNECT
            if self.body:
                body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                self.body.clear()
                self.body_size = 0
                self.final_sent = not self.more_body
                self._on_body_consumed()
                return {"type": "http.request", "body": body, "more_body": self.more_body}
            if not self.more_body and not self.final_sent:
                self.final_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.disconnected:
                return _DISCONNECT
            if self.more_body:
                if self.expect_continue:
                    self.expect_continue = False
                    if self.start is None and not self._transport.is_closing():
                        self._transport.write(_CONTINUE)
                        self._stats.sent += len(_CONTINUE)
                self._on_body_consumed()
            self.waiter = self._loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        # The transport is closing as soon as a write failed (a reset), before the
        # connection hears of it: an app that never yields must not stream into nothing.
        if self.gone or self._transport.is_closing():
            raise ClientDisconnected("the client closed the connection")
        if kind == "http.response.body":
            if self.start is None:
                raise RuntimeError(
                    "Expected ASGI message 'http.response.start', but got 'http.response.body'."
                )
            if self.complete:
                raise RuntimeError("Unexpected ASGI message 'http.response.body' after the end.")
            body = message.get("body", b"")
            if not isinstance(body, bytes):
                if not isinstance(body, bytearray | memoryview):
                    raise TypeError(f"http.response.body 'body' must be bytes, not {body!r}")
                body = bytes(body)
            more = message.get("more_body", False)
            self._write_body(body, bool(more))
            if more and self._flow.write_paused:
                await self._flow.drain()
                if self.gone:  # gone (or aborted for not reading) while we waited
                    raise ClientDisconnected("the client closed the connection")
        elif kind == "http.response.start":
            if self.start is not None:
                raise RuntimeError("Unexpected ASGI message 'http.response.start' sent twice.")
            self.start = message
            self.status = message["status"]
        else:
            raise RuntimeError(f"Unexpected ASGI message type {kind!r} in an HTTP response.")

    def _write_body(self, body: bytes, more: bool) -> None:
        framing = self.framing
        if framing is None:
            start = self.start
            assert start is not None
            framing = _framing.framed_head(
                self.status,
                start.get("headers", ()),
                self.http_11,
                self.head_request,
                self.keep_alive,
                self.head_defaults,
                None if more else len(body),
                self.reason,
            )
            head = framing.head
        else:
            head = b""
        mode = framing.mode
        if mode == LENGTH:
            sent = self.sent + len(body)
            if sent > framing.content_length:
                raise RuntimeError("Response content longer than its Content-Length.")
            if not more and sent < framing.content_length:
                raise RuntimeError("Response content shorter than its Content-Length.")
            self.sent = sent
        elif mode == CHUNKED:
            self.sent += len(body)
            body = _framing.chunk(body)
            if not more:
                body += _framing.LAST_CHUNK
        elif mode == NO_BODY:
            body = b""
        else:  # UNTIL_CLOSE
            self.sent += len(body)
        transport = self._transport
        if head:
            self.framing = framing
            self.close = framing.close
            if len(body) < _BIG:
                data = head + body
                self._stats.sent += len(data)
                transport.write(data)
            else:
                self._stats.sent += len(head) + len(body)
                transport.writelines((head, body))
        elif body:
            self._stats.sent += len(body)
            transport.write(body)
        if not more:
            self.complete = True
            self._on_response_complete(self)

    # -- running the app -------------------------------------------------------------------

    def app_returned(self, result: object) -> None:
        """The app's coroutine ended normally."""
        if result is not None:
            logger.error("ASGI callable should return None, but returned %r.", result)
            self._abort()
        elif not self.complete:
            if self._left():
                logger.debug("ASGI callable returned after the client went away.")
            elif self.start is None:
                logger.error("ASGI callable returned without starting a response.")
            else:
                logger.error("ASGI callable returned without completing the response.")
            self._abort()

    def app_failed(self, exc: BaseException) -> None:
        """The app raised ``exc``."""
        if self._left() and isinstance(exc, OSError | asyncio.CancelledError):
            logger.debug("client went away during the response: %r", exc)
        else:
            logger.error("Exception in ASGI application", exc_info=exc)
        self._abort()

    def _left(self) -> bool:
        """Whether the client went away (or closed its side, and the app was told)."""
        return self.disconnected or self._transport.is_closing()

    def _abort(self) -> None:
        if not self.complete:
            self._on_abort(self)


async def run_app(app: ASGIApp, cycle: AppCall, done: Callable[[], None]) -> None:
    """Run the app for one request (or WebSocket), settle the response whatever it does, then
    call ``done``.

    ``done`` runs in the task itself, not in a done-callback: those run a loop turn later,
    after the next pipelined request was already admitted (and counted against
    ``limit_concurrency``).
    """
    try:
        result = await app(cycle.scope, cycle.receive, cycle.send)
    except BaseException as exc:  # the app's errors, also CancelledError at shutdown
        cycle.app_failed(exc)
        if not isinstance(exc, Exception):
            raise
    else:
        cycle.app_returned(result)
    finally:
        done()

"""One WebSocket connection after its handshake request: bytes <-> wsproto frames.

``HTTPProtocol`` checks the upgrade request (``_ws_handshake.read_offer``), admits it like any
request, and hands the transport over to a ``WebSocketProtocol``, which runs the app at once
with ``websocket.connect`` waiting. The protocol owns the bytes and decides everything about
them; the app's side (``receive``/``send`` and their checks, the messages waiting for the app,
the disconnect it is told) is its ``WebSocketSession`` (``_ws_session.py``), as a ``Cycle`` is
``HTTPProtocol``'s. The protocol's phases (``WSPhase``), which only it changes:

- HANDSHAKE: the app has not answered; nothing is read (a client may not send frames before
  our 101; what came with the request waits). ``websocket.accept`` -> OPEN;
  ``websocket.close`` -> a 403; ``websocket.http.response.start`` -> RESPONDING.
- OPEN: messages both ways. Pings are answered, ours go out every ``ws_ping_interval``.
- CLOSING: a close frame went out (the app's, a drain's, or after the app returned); the peer's
  is awaited until a deadline, then the transport closes. Nothing more reaches the app.
- RESPONDING: the app denies the handshake with an HTTP response of its own (framed by a
  ``Cycle``, like any response), and the connection closes after it.
- CLOSED: the transport is closing or gone.

Memory is bounded both ways, by what the client's bytes can make us hold. A message over
``ws_max_size`` bytes or ``MAX_FRAGMENTS`` frames closes with 1009 as it grows (its frames are
joined as they come: ``_ws_message.py``; ``BoundedDeflate`` never inflates past the size).
Once ``ws_max_queue`` messages, or ``ws_max_size`` bytes of them, wait for the app, frames stay
unparsed (still compressed) in wsproto's buffer and reading pauses until the app takes one
(``room_again``): a connection holds under twice ``ws_max_size`` of messages, and what else
the client sends waits in the kernel's buffers. While the client does not read what we send,
the app waits in ``send()``, reading pauses (no pongs pile up), and after ``body_timeout`` the
connection is aborted.

A drain sends every open socket a close frame, 1012 (Service Restart) when a new worker
replaces this one and 1001 (Going Away) on a stop, and the app gets ``websocket.disconnect``
with that code. A socket is never just dropped.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING, Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from prefork.http._access import Handshake, log_access
from prefork.http._asgi import Cycle, Message
from prefork.http._flow import FlowControl
from prefork.http._framing import simple_response
from prefork.http._ws_fast import frame, take_frames, wsproto_idle
from prefork.http._ws_handshake import Offer, accept_response, denial_cycle, negotiate_deflate
from prefork.http._ws_message import MessageTooBig, Reassembly
from prefork.http._ws_session import (
    CLOSED,
    CLOSING,
    HANDSHAKE,
    OPEN,
    RESPONDING,
    WebSocketSession,
    WSPhase,
)

if TYPE_CHECKING:
    from prefork.http._state import ServerState

logger = logging.getLogger("prefork.http")

#: How long the peer has to answer our close frame before the transport closes anyway.
CLOSE_TIMEOUT = 10.0
#: Why a drain closes a socket, by close code.
DRAIN_REASONS = {1012: "server restarting", 1001: "server going away"}


class WebSocketProtocol(asyncio.Protocol):
    """An ``asyncio.Protocol`` for one WebSocket, from the handshake request on."""

    def __init__(
        self,
        state: ServerState,
        transport: asyncio.Transport,
        flow: FlowControl,
        scope: dict[str, Any],
        offer: Offer,
        pending: bytes,
    ) -> None:
        self.state = state
        self._stats = state.stats
        self.loop = loop = state.loop
        self.config = config = state.config
        self.transport = transport
        self.flow = flow
        self.scope = scope
        self.offer = offer
        self.phase: WSPhase = HANDSHAKE
        self.conn: Connection | None = None
        self._pending = pending  # bytes that came after the handshake request
        self._max_size = max_size = config.ws_max_size
        self.session = WebSocketSession(
            scope, self, transport, flow, loop, config.ws_max_queue, max_size
        )
        self.message = Reassembly(max_size)  # the message being received
        self.denial: Cycle | None = None
        self.deadline = 0.0  # CLOSING: the peer's close frame is due; else: a drain's end
        self.write_deadline = 0.0
        self._ping_interval = config.ws_ping_interval
        self.ping_at = 0.0
        self.pong_due = 0.0
        self._pings = 0
        self.draining = False
        self._fast = False  # the fast path (``_ws_fast``) reads frames: no extension
        self.started = state.clock()  # the handshake's duration counts from here

    def start(self) -> None:
        """Count the connection and start the app; read nothing until it accepts."""
        self.state.connections.add(self)
        self.flow.pause_reading()
        self.state.start_app(self.session)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._stats.received += len(data)
        conn = self.conn
        if conn is None:  # a read that was under way when the handshake paused reading
            self._pending += data
        elif self.phase is OPEN or self.phase is CLOSING:
            if self._fast and self.phase is OPEN and wsproto_idle(conn):
                taken = take_frames(data, self._max_size, self.session)
                if taken == len(data):
                    self._update_reading()  # (``_read_events``' end)
                    return
                data = data[taken:]  # from a frame wsproto reads, or one there is no room for
            conn.receive_data(data)
            self._read_events()

    def eof_received(self) -> bool | None:
        return None  # a FIN without a close frame: the transport closes (the app gets 1006)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:  # it was accepted (``accept``): one WebSocket fewer
            self._stats.websockets -= 1
        self.phase = CLOSED
        self.session.closed(1006, "")
        if self.denial is not None:
            self.denial.disconnect()
        self.flow.lost()
        self.state.connection_closed(self)

    def pause_writing(self) -> None:
        self.flow.pause_writing()
        self.write_deadline = self.loop.time() + self.config.body_timeout
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_deadline = 0.0
        self.flow.resume_writing()
        self._update_reading()

    # -- frames in -------------------------------------------------------------------------

    def _read_events(self) -> None:
        """Take what wsproto parsed, while there is room (``_room``): the rest waits in
        wsproto's buffer, unparsed, and reading pauses."""
        conn = self.conn
        assert conn is not None
        room = self._room()
        for event in conn.events() if room else ():  # a read may come after pause_reading
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                if self.phase is OPEN:
                    self._message_part(event)  # type: ignore[arg-type]
            elif kind is Ping:
                if conn.state is ConnectionState.OPEN:
                    self._write(conn.send(event.response()))  # type: ignore[attr-defined]
            elif kind is Pong:
                if event.payload == struct.pack("!I", self._pings):  # type: ignore[attr-defined]
                    self.pong_due = 0.0
                    self.ping_at = self.loop.time() + self._ping_interval
            else:
                assert isinstance(event, CloseConnection)
                self._close_received(conn, event)
            room = self._room()
            if not room:
                break
        self._update_reading(room)

    def _message_part(self, event: TextMessage | BytesMessage) -> None:
        try:
            whole = self.message.add(event)
        except MessageTooBig as exc:
            self._fail(1009, str(exc))
            return
        if whole is not None:
            self.session.message_received(*whole)

    def _close_received(self, conn: Connection, event: CloseConnection) -> None:
        if conn.state is ConnectionState.REMOTE_CLOSING:  # the peer begins the close
            self._write(conn.send(event.response()))
            self.session.closed(int(event.code), event.reason or "")
            self._finish()
        elif conn.state is ConnectionState.CLOSED:  # the peer answers our close
            self._finish()
        elif conn.state is ConnectionState.OPEN:  # wsproto found an error: 1002, 1007, 1009
            self._fail(int(event.code), event.reason or "")
        else:  # an error after our close frame: nothing more to say
            self._finish()

    def _room(self) -> bool:
        """Whether to parse more: while closing (to find the peer's close frame), or while
        open with room in the app's queue (``WebSocketSession.queue_full``)."""
        phase = self.phase
        return phase is CLOSING or (phase is OPEN and not self.session.queue_full())

    def _update_reading(self, room: bool | None = None) -> None:
        """Read while there is room to parse (``room``, if the caller knows) and our writes
        are not paused."""
        flow = self.flow
        if room is None:
            room = self._room()
        if room and not flow.write_paused:
            flow.resume_reading()
        else:
            flow.pause_reading()

    # -- what the session asks (``SocketSide``) --------------------------------------------

    def room_again(self) -> None:
        """The app took a message from a full queue while OPEN: parse what waits in wsproto's
        buffer, and read again."""
        self._read_events()

    def send_message(self, data: str | bytes) -> None:
        """Frame one of the app's messages and write it."""
        conn = self.conn
        assert conn is not None
        if self._fast and conn.state is ConnectionState.OPEN:
            self._write(frame(data))
        else:
            event = TextMessage(data) if isinstance(data, str) else BytesMessage(data)
            self._write(conn.send(event))

    def accept(self, message: Message) -> None:
        """The app's ``websocket.accept``: the 101 answer, then frames both ways."""
        config = self.config
        offer = self.offer
        deflate = None
        if config.ws_per_message_deflate and offer.extensions:
            deflate = negotiate_deflate(offer.extensions, self._max_size)
        head = accept_response(
            offer,
            subprotocol=message.get("subprotocol"),
            headers=message.get("headers"),
            extension=deflate[1] if deflate else None,
            defaults=self.state.head_defaults,
        )
        self._answer(head, 101)
        conn = self.conn = Connection(ConnectionType.SERVER, [deflate[0]] if deflate else None)
        self._fast = deflate is None  # compressed frames are wsproto's alone
        self.phase = OPEN
        self._stats.websockets += 1
        if self._ping_interval:
            self.ping_at = self.loop.time() + self._ping_interval
        if self._pending:
            conn.receive_data(self._pending)
            self._pending = b""
        self._read_events()
        if self.draining and self.phase is OPEN:
            self._close_for_drain()

    def refuse(self) -> None:
        """The app's ``websocket.close`` before accepting: a 403, then the connection closes."""
        self._answer(simple_response(403, b""), 403)
        self.session.closed(1006, "")
        self._finish()

    def deny(self) -> Cycle:
        """The app answers the handshake with an HTTP response (the denial-response
        extension): framed like any response by the ``Cycle`` returned, then the connection
        closes."""
        self.phase = RESPONDING
        self.session.closed(1006, "")
        state = self.state
        denial = self.denial = denial_cycle(
            self.scope, self.transport, self.flow, state.head_defaults, state.stats, self._denied
        )
        return denial

    def _denied(self) -> None:
        denial = self.denial
        assert denial is not None
        taken = self.state.clock() - self.started
        self._stats.responded("GET", denial.status, taken)
        if self.config.access_log:
            log_access(denial, self.config.access_log_format, taken)
        self._finish()

    def _answer(self, response: bytes, status: int) -> None:
        """Write the handshake's answer; count it as the request's response, and log it."""
        self._write(response)
        taken = self.state.clock() - self.started
        self._stats.responded("GET", status, taken)
        if self.config.access_log:
            log_access(Handshake(self.scope, status), self.config.access_log_format, taken)

    def _write(self, data: bytes) -> None:
        self._stats.sent += len(data)
        self.transport.write(data)

    def app_ended(self, failed: bool) -> None:
        """The app's coroutine ended (``failed``: it raised or returned a value)."""
        phase = self.phase
        if phase is HANDSHAKE:
            if not failed:
                logger.error("ASGI callable returned without accepting or closing the WebSocket.")
            self._answer(simple_response(500, b"Internal Server Error\n"), 500)
            self._finish()
        elif phase is OPEN:  # a socket is never just dropped: 1011 after an error, else 1000
            self.close(1011 if failed else 1000, "")
        elif phase is RESPONDING:
            self._finish(abort=True)  # the response is incomplete

    # -- closing ---------------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Send our close frame; wait (until a deadline) for the peer's."""
        conn = self.conn
        assert conn is not None
        self._write(conn.send(CloseConnection(code, reason)))
        self.session.closed(code, reason)
        self.phase = CLOSING
        self.message.clear()  # no more messages reach the app
        self.deadline = self.loop.time() + CLOSE_TIMEOUT
        self._update_reading()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): a close frame, then close at once."""
        conn = self.conn
        assert conn is not None  # and open: every caller runs in the OPEN phase
        self._write(conn.send(CloseConnection(code, reason)))
        self.session.closed(code, reason)
        self._finish()

    def _finish(self, abort: bool = False) -> None:
        self.phase = CLOSED
        self.deadline = 0.0
        self.message.clear()
        self.session.drop_messages()
        if abort:
            self.write_deadline = 0.0
        self.flow.end(abort)  # a close flushes first: the write deadline still bounds that

    def _close_for_drain(self) -> None:
        code = self.state.close_code
        self.close(code, DRAIN_REASONS.get(code, ""))

    # -- timeouts and drain ----------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """Abort a client that stopped reading; close one that let a deadline pass; ping."""
        if self.write_deadline and now >= self.write_deadline:
            self._finish(abort=True)
        elif self.deadline and now >= self.deadline:
            self._finish()
        elif self.phase is OPEN and self._ping_interval:
            if self.pong_due:
                if now >= self.pong_due:
                    self._fail(1011, "keepalive ping timeout")
            elif now >= self.ping_at:
                self._ping(now)

    def _ping(self, now: float) -> None:
        assert self.conn is not None
        self._pings += 1
        self._write(self.conn.send(Ping(struct.pack("!I", self._pings))))
        timeout = self.config.ws_ping_timeout
        if timeout:
            self.pong_due = now + timeout
        else:
            self.ping_at = now + self._ping_interval

    def start_drain(self, until: float = float("inf")) -> None:
        """Close with the drain's code (``state.close_code``); a socket still in its handshake
        is closed so once the app accepts. Nothing waits past ``until``."""
        self.draining = True
        if self.phase is OPEN:
            self._close_for_drain()
        if self.phase is not CLOSED:
            self.deadline = min(self.deadline or until, until)

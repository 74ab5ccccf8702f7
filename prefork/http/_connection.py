"""One HTTP/1.1 connection: bytes from the transport -> a checked request head -> a ``Cycle``.

Each request head is read by ``RequestReader.parse``: ``_lines`` checks the raw lines, then
either the fast path (``_parse.fast_head``: the heads nearly every client sends, read exactly
as h11 reads them) or h11, the reference parser, for everything else (``--http h11``: h11 for
every head); ``_parse.request_info`` checks what both let through. A Content-Length body is
counted (``_body.LengthBody``); a chunked one passes a ``ChunkScanner`` and is de-chunked by
h11 (``_body.ChunkedBody``). Responses are framed by ``_framing``.

A request goes through three steps: ``RequestReader.parse`` (bytes -> ``RequestInfo``),
``_admit`` (limits) and ``_begin`` (the cycle and the app's task). A WebSocket handshake
leaves that path at ``_upgrade``. Every check refuses by raising ``Refused``; ``_refuse``
answers and closes.

Phases, deadlines, refusals, closes and drains: ``_ending.ConnectionEnd``, a part of
``HTTPProtocol`` in a module of its own.

Memory per connection is bounded whatever the client and the app do: a response completed
while the client does not read (writing paused) puts the connection in FLUSH, where nothing is
read, parsed or started until the transport drains; an app streaming a response waits in
``send()`` meanwhile. So the transport holds at most its high-water mark plus one app message,
and pipelined bytes at most ``BODY_BUFFER`` plus one read.

End of input (a FIN) looks the same whether the client half-closed (shutdown(SHUT_WR), as
``nc`` and pipelining scripts do) or is gone; only a write tells them apart. The rule, decided:
every complete request already read is answered, in order, then the connection closes (a FIN
while a head or a body is incomplete closes at once: it cannot complete). The app of the last
such request, if it asks ``receive()`` for more once its body is read, gets ``http.disconnect``
at once: long-polls and server-sent events end promptly when the client leaves, as with
uvicorn. Its ``send()`` still writes, so a half-closed client gets its answer; from a client
that is gone, the write brings a reset and ``send()`` raises (it raises as soon as the
transport is closing, ASGI 2.4). An app told ``http.disconnect`` that returns without
answering gets no 500: the connection just closes.
"""

from __future__ import annotations

import asyncio

import h11

from prefork.http._access import log_access
from prefork.http._asgi import Cycle
from prefork.http._body import ChunkedBody, LengthBody
from prefork.http._ending import ConnectionEnd
from prefork.http._flow import BODY_BUFFER, FlowControl
from prefork.http._lines import ChunkScanner, Refused
from prefork.http._parse import RequestInfo, RequestReader
from prefork.http._scope import (
    ClientAddress,
    ServerAddress,
    build_scope,
    client_address,
    server_address,
)
from prefork.http._state import Phase, ServerState
from prefork.http._websocket import WebSocketProtocol
from prefork.http._ws_handshake import read_offer, websocket_scope

__all__ = ["BODY_BUFFER", "HTTPProtocol"]

# Module globals: compared by identity on every read, faster than ``Phase.X`` lookups.
IDLE, HEAD, BODY, BUSY, DISCARD, FLUSH, CLOSED = (
    Phase.IDLE,
    Phase.HEAD,
    Phase.BODY,
    Phase.BUSY,
    Phase.DISCARD,
    Phase.FLUSH,
    Phase.CLOSED,
)

#: A read this small that leaves a head incomplete pauses reading for ``GATHER`` seconds.
TINY_READ = 256
GATHER = 0.005


class HTTPProtocol(ConnectionEnd, asyncio.Protocol):
    """An ``asyncio.Protocol`` serving HTTP/1.1 requests to an ASGI app."""

    transport: asyncio.Transport
    flow: FlowControl

    def __init__(
        self,
        state: ServerState,
        client: ClientAddress | None = None,
        server: ServerAddress | None = None,
        fd: int | None = None,
    ) -> None:
        """``client`` and ``server``: the addresses, when the acceptor knows them (else they
        are asked of the transport); ``fd``: the socket's, for an early FIN (``FlowControl``)."""
        self.state = state
        self.loop = state.loop
        config = state.config
        self._config = config
        self._timeouts = state.timeouts
        self._stats = state.stats
        self.server = server
        self.client = client
        self._fd = fd
        self.cycle: Cycle | None = None
        self.phase = HEAD
        self.deadline = 0.0
        self.write_deadline = 0.0
        self.draining = False
        # The bytes read and not parsed yet.
        self._reader = RequestReader(state.limits, state.fast_heads, state.heads)
        self._parser: h11.Connection | None = None  # of a chunked request's head
        self._body: LengthBody | ChunkedBody | None = None  # the request body being read
        self._eof = False
        self._served = 0
        # The cycle's callbacks, bound once rather than once per request.
        self._on_complete = self.response_complete
        self._on_consumed = self.body_consumed
        self._on_abort = self.abort_cycle

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(self.transport, self.loop, self._fd)
        if self.server is None:
            self.server = server_address(transport.get_extra_info("sockname"))
        if self.client is None:
            self.client = client_address(transport.get_extra_info("peername"))
        self.state.connections.add(self)
        self._enter(HEAD)
        if self.state.draining:
            self.start_drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = CLOSED  # _enter(CLOSED) inline: no timeout (once per connection)
        self.deadline = 0.0
        cycle = self.cycle
        if cycle is not None:
            self.cycle = None
            if not cycle.gone:  # (a close told it already)
                cycle.disconnect()
        self.flow.lost()
        self.state.connection_closed(self)
        self._unlink()

    def _unlink(self) -> None:
        """Leave no reference cycle behind (the bound callbacks point back at this protocol,
        its cycle at them): the protocol is then freed by its last reference, not by the
        cyclic GC, which took ~11% of a worker's CPU under ``Connection: close``."""
        del self._on_complete, self._on_consumed, self._on_abort

    def eof_received(self) -> bool | None:
        """Answer the complete requests already read, then close (module docstring)."""
        phase = self.phase
        if phase is BUSY or phase is FLUSH:
            self._eof = True
            if phase is BUSY and self._reader.nothing_follows():
                assert self.cycle is not None
                self.cycle.peer_closed()
            return True
        if (phase is IDLE or phase is HEAD) and self._reader.buf:
            self._eof = True
            self._handle_head()  # a whole request is answered; an incomplete one closes
            return True
        return None  # nothing to answer (or a body that cannot complete): close

    def data_received(self, data: bytes) -> None:
        self._stats.received += len(data)
        phase = self.phase
        if phase is IDLE or phase is HEAD:
            reader = self._reader
            if reader.buf:
                reader.append(data)
            else:
                reader.buf = data
            self._handle_head()
            waiting = (self.phase is IDLE or self.phase is HEAD) and reader.buf
            if len(data) < TINY_READ and waiting and not self.flow.read_paused:
                # A head coming in tiny pieces (a slow client, or one byte per write): each
                # read costs a system call and a callback, so let the kernel gather a few.
                self.flow.pause_reading()
                self.loop.call_later(GATHER, self._gathered)
        elif phase is BODY or phase is DISCARD:
            assert self._body is not None
            try:
                self._body.feed(data)
                self._read_body()
            except Refused as exc:
                self._refuse(exc.status, exc.reason, exc.headers)
        elif phase is BUSY or phase is FLUSH:
            self._reader.append(data)  # pipelined: parsed once the response is done and read
            if len(self._reader.buf) > BODY_BUFFER:
                self.flow.pause_reading()

    def _gathered(self) -> None:
        if self.phase is IDLE or self.phase is HEAD:  # else: closed, or a later pause's
            self.flow.resume_reading()

    def pause_writing(self) -> None:
        self.flow.pause_writing()
        self.write_deadline = self.loop.time() + self._config.body_timeout

    def resume_writing(self) -> None:
        self.write_deadline = 0.0
        self.flow.resume_writing()
        if self.phase is FLUSH:
            self._after_response()  # the client read our response: go on

    # -- requests: parse, admit, begin -----------------------------------------------------

    def _handle_head(self) -> None:
        """Start the request at the front of the buffer, once its head is whole.

        Apps run in tasks, so this never re-enters itself: a response completed in a task
        schedules the next pipelined request with call_soon (no recursion, however many
        requests one write carried).
        """
        if not (self.phase is IDLE or self.phase is HEAD) or not self._reader.buf:
            return
        try:
            parsed = self._reader.parse()
            if parsed is None:
                if self._eof:
                    self._close()  # the rest of the head cannot come any more
                return
            info, self._parser = parsed
            if info.websocket:
                self._upgrade(info)
            else:
                self._admit(info)
                self._begin(info)
        except Refused as exc:
            self._refuse(exc.status, exc.reason, exc.headers)

    def _upgrade(self, info: RequestInfo) -> None:
        """Hand the connection over to a ``WebSocketProtocol`` (``--ws none``: an upgrade
        request is a plain request, and so it is to a WSGI app, which decides, as under
        gunicorn). Refused like any request: a bad handshake (400, 426), over
        ``limit_concurrency`` (503), or while draining (503: the client reconnects to the
        worker that replaces this one)."""
        if self._config.ws == "none" or self.state.pool is not None:
            self._admit(info)
            self._begin(info)
            return
        offer = read_offer(info)
        self._admit(info)
        if self.draining:
            raise Refused(503, b"Service unavailable.\n")
        if self._eof:
            self._close()  # the client has already shut its side: no frame can come
            return
        state = self.state
        state.request_started()
        self._served += 1
        pending = bytes(self._reader.buf[info.head_end :])
        self._reader.buf = b""
        self._parser = None
        self._enter(CLOSED)  # this protocol is done with the transport
        state.connections.discard(self)
        scope = build_scope(
            state, self.server, self.client, b"GET", info.path, b"1.1", info.headers
        )
        socket = WebSocketProtocol(
            state, self.transport, self.flow, websocket_scope(scope, offer), offer, pending
        )
        self.transport.set_protocol(socket)
        socket.start()
        self._unlink()  # the WebSocket has the transport: this protocol is done

    def _admit(self, info: RequestInfo) -> None:
        """Refuse a request over a limit (body size, concurrency) before it starts."""
        config = self._config
        if info.has_body:
            body_limit = config.limit_request_body
            buf = self._reader.buf
            if info.chunked:
                scanner = ChunkScanner(body_limit, self.state.limits)
                scanner.feed(buf, info.head_end)  # body bytes that came with the head
                assert self._parser is not None
                self._body = ChunkedBody(self._parser, scanner)
            elif body_limit and info.content_length > body_limit:
                raise Refused(413, b"Request body too large.\n")
            else:
                self._body = LengthBody(info.content_length, buf[info.head_end :])
        state = self.state
        limit = config.limit_concurrency
        if limit is not None and (len(state.connections) > limit or state.inflight >= limit):
            raise Refused(503, b"Service unavailable.\n")

    def _begin(self, info: RequestInfo) -> None:
        """Create the request's cycle and start the app (once the body so far is read)."""
        state = self.state
        state.request_started()
        self._served += 1
        reader = self._reader
        self._parser = None
        if info.has_body:
            reader.buf = b""  # the body reader holds the rest
            self._enter(BODY)
        else:
            buf = reader.buf
            reader.buf = buf[info.head_end :] if info.head_end < len(buf) else b""
            self.phase = BUSY  # _enter(BUSY) inline: no timeout (once per request)
            self.deadline = 0.0
        method = info.method
        http_version = info.http_version
        cycle = self.cycle = state.cycle_type(
            build_scope(
                state, self.server, self.client, method, info.path, http_version, info.headers
            ),
            self.transport,
            self.flow,
            self.loop,
            # has_body, keep_alive, expect_continue, http_11, head_request, head_defaults,
            # stats, on_response_complete, on_body_consumed, on_abort: by position, for speed
            info.has_body,
            info.keep_alive and not self.draining,
            info.expect_continue,
            http_version == b"1.1",
            method == b"HEAD",
            state.head_defaults,
            self._stats,
            self._on_complete,
            self._on_consumed,
            self._on_abort,
        )
        if info.has_body:
            self._read_body()  # a refusal here leaves the app unstarted
            if self._eof and self.phase is BODY:
                self._close()  # the rest of the body cannot come any more
                return
        if self._eof and reader.nothing_follows():
            cycle.peer_closed()
        cycle.started = self.state.clock()  # the request's duration counts from here
        state.start_app(cycle)

    def _read_body(self) -> None:
        """Pass the body read so far to the cycle (skip it in DISCARD).

        Raises ``Refused`` for a body found malformed.
        """
        body = self._body
        cycle = self.cycle
        assert body is not None and cycle is not None
        discard = self.phase is DISCARD
        pieces, done = body.take()
        if not discard:
            for piece in pieces:
                cycle.body_received(piece)
        if done:
            self._reader.buf = body.rest
            self._body = None
            if discard:
                self._after_response()
            else:
                self._enter(BUSY)
                cycle.body_complete()
            return
        if discard or cycle.body_size <= BODY_BUFFER:
            self._enter(self.phase)  # an idle timeout: counted from the latest bytes
        else:
            self.flow.pause_reading()
            self.deadline = 0.0  # we are the slow side now: no body timeout while paused

    def body_consumed(self) -> None:
        """The app took the buffered body (or waits for more): read again."""
        if self.flow.read_paused and self.phase is BODY:
            self.flow.resume_reading()
            self._enter(BODY)

    # -- the end of a response -------------------------------------------------------------

    def response_complete(self, cycle: Cycle) -> None:
        """The app sent the last body message of ``cycle``'s response."""
        taken = self.state.clock() - cycle.started
        self._stats.responded(cycle.scope.get("method", ""), cycle.status, taken)
        if self._config.access_log:
            log_access(cycle, self._config.access_log_format, taken)
        phase = self.phase
        if cycle.close or self.draining or phase is CLOSED:
            self._close()
        elif phase is BODY:  # the app did not read the whole body: skip the rest
            # h11 has parsed every byte it was given (``_read_body`` runs to NEED_DATA), so
            # there is nothing to skip yet: from now on, ``_read_body`` skips what comes.
            cycle.drop_body()
            self._enter(DISCARD)
            self.flow.resume_reading()
        else:
            self._after_response()

    def _after_response(self) -> None:
        self.cycle = None
        flow = self.flow
        if flow.write_paused:
            # The client has not read this response: read and start nothing more until it
            # has (``resume_writing``), or the write deadline aborts.
            flow.pause_reading()
            self._enter(FLUSH)
            return
        flow.resume_reading()
        if self._reader.buf:
            self._enter(HEAD)
            self.loop.call_soon(self._handle_head)
        elif self._eof:
            self._close()
        else:
            self._enter(IDLE)

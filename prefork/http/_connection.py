"""One HTTP/1.1 connection: bytes from the transport -> h11 (parsing only) -> a ``Cycle``.

h11 parses and validates each request head and body; a fresh ``h11.Connection`` per request is
fed the bytes left over by the previous one, and responses are framed by ``_framing`` (twice
as fast as letting h11 frame them). The raw bytes of a chunked body pass a ``ChunkScanner``
before h11 sees them. Timeouts are deadlines checked by the server's sweep, so arming one
costs a float store, not a timer handle per request; ``write_deadline`` bounds how long a
client may leave our writes paused (then the connection is aborted, its buffer dropped).

Phases: HEAD (waiting for a request head), BODY (a request is running and its body is still
arriving), BUSY (the body is complete, the response is not), DISCARD (the response is done
and the rest of an unread body is skipped), CLOSED.
"""

from __future__ import annotations

import asyncio

import h11

from prefork.http._asgi import Cycle, build_scope, log_access, run_app
from prefork.http._framing import simple_response
from prefork.http._parse import (
    HEAD_END,
    ChunkScanner,
    RequestInfo,
    check_raw_head,
    inspect_request,
)
from prefork.http._state import ServerState

__all__ = ["BODY_BUFFER", "HTTPProtocol", "ServerState"]

HEAD, BODY, BUSY, DISCARD, CLOSED = range(5)

#: Reading pauses while this much request body waits for the app (and a pipelined backlog).
BODY_BUFFER = 65536
#: On drain, how long an idle keep-alive connection may still bring one last request.
DRAIN_IDLE_GRACE = 0.5


class HTTPProtocol(asyncio.Protocol):
    """An ``asyncio.Protocol`` serving HTTP/1.1 requests to an ASGI app."""

    transport: asyncio.Transport

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = state.loop
        config = state.config
        self._config = config
        self._fast_head = min(config.limit_request_line, config.limit_request_field_size)
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.cycle: Cycle | None = None
        self.phase = HEAD
        self.deadline = 0.0
        self.write_deadline = 0.0
        self.read_paused = False
        self.write_paused = False
        self.draining = False
        self._buf = b""
        self._parser: h11.Connection | None = None
        self._chunks: ChunkScanner | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._served = 0

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sockname = transport.get_extra_info("sockname")
        peername = transport.get_extra_info("peername")
        if isinstance(sockname, tuple):
            self.server = (str(sockname[0]), int(sockname[1]))
        elif sockname:
            self.server = (str(sockname), None)
        if isinstance(peername, tuple):
            self.client = (str(peername[0]), int(peername[1]))
        self.state.connections.add(self)
        self.deadline = self.loop.time() + self._config.header_timeout
        if self.state.draining:
            self.start_drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = CLOSED
        self.deadline = 0.0
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnected = True
            cycle.wake()
        self._wake_writer()
        self.state.connection_closed(self)

    def eof_received(self) -> bool | None:
        if self.phase == BUSY:
            self._eof = True  # half-closed after a whole request: answer it, then close
            return True
        return None

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == HEAD:
            self._buf = self._buf + data if self._buf else data
            self._handle_heads()
        elif phase in (BODY, DISCARD):
            assert self._parser is not None
            if self._chunks is not None:
                refusal = self._chunks.feed(data)
                if refusal is not None:
                    self._refuse(*refusal)
                    return
            self._parser.receive_data(data)
            self._read_body()
        elif phase == BUSY:
            self._buf += data  # pipelined: parsed once the response is done
            if len(self._buf) > BODY_BUFFER and not self.read_paused:
                self._pause_reading()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_deadline = self.loop.time() + self._config.body_timeout

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_deadline = 0.0
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport takes more data (or the connection is gone)."""
        if self.write_paused and self.phase != CLOSED:
            self._drain_waiter = self.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    # -- requests --------------------------------------------------------------------------

    def _handle_heads(self) -> None:
        # Apps run in tasks, so this loop never re-enters itself: a response completed in a
        # task schedules the next pipelined request with call_soon (no recursion, however
        # many requests one write carried).
        while self.phase == HEAD and self._buf and self._start_request():
            pass

    def _start_request(self) -> bool:
        """Start the request at the front of the buffer; False if there is none (yet)."""
        buf = self._buf
        if buf[0] in b"\r\n":  # RFC 9112 section 2.2: ignore empty lines before a request
            buf = self._buf = buf.lstrip(b"\r\n")
            if not buf:
                return False
        config = self._config
        match = HEAD_END.search(buf)
        end = match.end() if match is not None else -1
        if end == -1 or end > self._fast_head:
            refusal = check_raw_head(
                buf,
                end,
                line_limit=config.limit_request_line,
                field_limit=config.limit_request_field_size,
                head_limit=config.limit_request_head,
            )
            if refusal is not None:
                self._refuse(*refusal)
                return False
            if end == -1:
                return False
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=config.limit_request_head)
        parser.receive_data(buf)
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError as exc:
            self._refuse(exc.error_status_hint, b"Invalid HTTP request.\n")
            return False
        assert isinstance(event, h11.Request)  # a whole head is in the buffer
        info = inspect_request(event, buf, end, field_count_limit=config.limit_request_fields)
        if not isinstance(info, RequestInfo):
            self._refuse(*info)
            return False
        if info.websocket:
            self._refuse(400, b"WebSocket is not supported by this server.\n")
            return False
        if info.has_body:
            body_limit = config.limit_request_body
            if info.chunked:
                scanner = ChunkScanner(body_limit, config.limit_request_field_size)
                refusal = scanner.feed(buf, end)
                if refusal is not None:
                    self._refuse(*refusal)
                    return False
                self._chunks = scanner
            elif body_limit and info.content_length > body_limit:
                self._refuse(413, b"Request body too large.\n")
                return False
        state = self.state
        limit = config.limit_concurrency
        if limit is not None and (len(state.connections) > limit or state.inflight >= limit):
            self._refuse(503, b"Service unavailable.\n")
            return False
        state.request_started()
        self._served += 1
        if info.has_body:
            self._buf = b""
            self._parser = parser
            self.phase = BODY
        else:
            self._buf = parser.trailing_data[0] if end < len(buf) else b""
            self.phase = BUSY
            self.deadline = 0.0
        method = event.method
        http_11 = event.http_version == b"1.1"
        cycle = self.cycle = Cycle(
            self,
            build_scope(self, method, info.path, event.http_version, info.headers),
            has_body=info.has_body,
            keep_alive=info.keep_alive,
            expect_continue=info.expect_continue,
            http_11=http_11,
            head_request=method == b"HEAD",
        )
        if info.has_body:
            self._read_body()
            if self.phase == CLOSED:
                return False
        state.inflight += 1
        self._run(cycle)
        return True

    def _run(self, cycle: Cycle) -> None:
        task = self.loop.create_task(run_app(self.state.app, cycle))
        tasks = self.state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _read_body(self) -> None:
        parser = self._parser
        cycle = self.cycle
        assert parser is not None and cycle is not None
        discard = self.phase == DISCARD
        try:
            while True:
                event = parser.next_event()
                if type(event) is h11.Data:
                    if not discard:
                        cycle.body.append(bytes(event.data))
                        cycle.body_size += len(event.data)
                elif type(event) is h11.EndOfMessage:
                    self._buf = parser.trailing_data[0]
                    self._parser = None
                    self._chunks = None
                    if discard:
                        self._after_response()
                    else:
                        self.phase = BUSY
                        self.deadline = 0.0
                        cycle.more_body = False
                        cycle.wake()
                    return
                else:
                    break  # NEED_DATA
        except h11.RemoteProtocolError as exc:
            self._refuse(exc.error_status_hint, b"Invalid HTTP request body.\n")
            return
        if discard:
            self.deadline = self.loop.time() + self._config.body_timeout
        elif cycle.body:
            if cycle.body_size > BODY_BUFFER:
                self._pause_reading()
            else:
                self.deadline = self.loop.time() + self._config.body_timeout
            cycle.wake()
        else:
            self.deadline = self.loop.time() + self._config.body_timeout

    def body_consumed(self) -> None:
        """The app took the buffered body (or waits for more): read again."""
        if self.read_paused and self.phase == BODY:
            self._resume_reading()
            self.deadline = self.loop.time() + self._config.body_timeout

    def _pause_reading(self) -> None:
        self.read_paused = True
        self.deadline = 0.0  # we are the slow side now: no body timeout
        self.transport.pause_reading()

    def _resume_reading(self) -> None:
        self.read_paused = False
        self.transport.resume_reading()

    # -- the end of a response -------------------------------------------------------------

    def response_complete(self, cycle: Cycle) -> None:
        """The app sent the last body message of ``cycle``'s response."""
        if self._config.access_log:
            log_access(cycle)
        if cycle.close or self.draining or self._eof or self.phase == CLOSED:
            self._close()
        elif self.phase == BODY:  # the app did not read the whole body: skip the rest
            cycle.body.clear()
            self.phase = DISCARD
            if self.read_paused:
                self._resume_reading()
            self._read_body()
        else:
            self._after_response()

    def _after_response(self) -> None:
        self.cycle = None
        self.phase = HEAD
        if self.read_paused:
            self._resume_reading()
        if self._buf:
            self.deadline = self.loop.time() + self._config.header_timeout
            self.loop.call_soon(self._handle_heads)
        else:
            self.deadline = self.loop.time() + self._config.keep_alive

    def abort_cycle(self, cycle: Cycle) -> None:
        """The app failed or left ``cycle`` unfinished: answer 500 if we can, and close."""
        if cycle.complete or cycle is not self.cycle:
            return
        if cycle.framing is None and self.phase != CLOSED:
            self.transport.write(simple_response(500, b"Internal Server Error\n"))
        self._close()

    def _refuse(self, status: int, message: bytes) -> None:
        """Answer ``status`` (unless a response has begun) and close."""
        cycle = self.cycle
        if cycle is None or cycle.framing is None:
            self.transport.write(simple_response(status, message))
        self._close()

    def _close(self, abort: bool = False) -> None:
        """Close (``abort``: at once, dropping what the client has not read yet)."""
        self.phase = CLOSED
        self.deadline = 0.0
        cycle = self.cycle
        if cycle is not None and not cycle.disconnected:
            cycle.disconnected = True
            cycle.wake()
        if abort:
            self.write_deadline = 0.0
            self._wake_writer()
            self.transport.abort()
        else:
            self.transport.close()  # flushes first: write_deadline still bounds that

    # -- timeouts and drain ----------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """Close the connection if its current deadline has passed."""
        if self.write_deadline and now >= self.write_deadline:
            self._close(abort=True)  # the client stopped reading our response
        elif self.deadline and now >= self.deadline:
            if self.phase == HEAD and self._buf:
                self._refuse(408, b"Request timeout.\n")
            else:
                self._close()

    def start_drain(self) -> None:
        """Finish the request in flight (with ``Connection: close``), then close."""
        self.draining = True
        if self.phase == HEAD and not self._buf:
            if self._served:
                # An idle keep-alive connection may have a request on the wire already:
                # closing now would reset it. Wait a moment; a request that comes is
                # answered with ``Connection: close``.
                grace = min(DRAIN_IDLE_GRACE, self._config.keep_alive)
                self.loop.call_later(grace, self._close_if_idle)
            else:  # accepted but nothing sent yet: give the client a moment, not forever
                self.deadline = min(self.deadline, self.loop.time() + self._config.keep_alive)

    def _close_if_idle(self) -> None:
        if self.phase == HEAD and not self._buf:
            self._close()

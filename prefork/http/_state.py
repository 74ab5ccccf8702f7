"""What the connections of one worker share: the app and the tasks running it, config, request
counters and metrics, the deadline sweep (one timer per worker instead of one per request; it
also sends the metrics report) and the drain; and the phases a connection goes through, with
the timeout each one arms, as data.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Callable
from enum import IntEnum
from time import perf_counter
from typing import Any, Protocol

from prefork.http._asgi import AppCall, ASGIApp, Cycle, run_app
from prefork.http._config import HTTPConfig
from prefork.http._framing import HeadDefaults
from prefork.http._lines import Limits
from prefork.http._parse import RequestInfo
from prefork.http._stats import Stats
from prefork.http._wsgi import WSGICycle
from prefork.http._wsgi_pool import WSGIPool

#: How long a refused connection's socket stays open after our answer (``linger``), and how
#: many may at once.
LINGER = 2.0
MAX_LINGERING = 256
#: Seconds between two metrics reports to the master (about: the sweep sends them).
REPORT_INTERVAL = 1.0


class Connection(Protocol):
    """What the worker does with each connection, HTTP or WebSocket."""

    def check_deadline(self, now: float) -> None: ...
    def start_drain(self, until: float = ...) -> None: ...


class Phase(IntEnum):
    """Where a connection is between two requests or within one.

    An ``IntEnum`` so that a phase indexes ``ServerState.timeouts`` directly (an ``Enum``
    member hashes in Python code, a dict lookup per change of phase).
    """

    IDLE = 0  # kept alive after a response, waiting for the next request
    HEAD = 1  # a request head is due: a fresh connection, or pipelined bytes are waiting
    BODY = 2  # the app runs and the request body is still arriving
    BUSY = 3  # the body is complete (or there is none), the response is not
    DISCARD = 4  # the response is complete; the rest of a body the app did not read is skipped
    FLUSH = 5  # the response is complete, the client has not read it: nothing else is read
    CLOSED = 6


#: The ``HTTPConfig`` timeout that arms a connection's deadline as it enters each phase, counted
#: from then (None: no deadline; the app's own time is not bounded). BODY and DISCARD re-arm on
#: every read, so theirs is an idle timeout; while reading is paused there is none (we are the
#: slow side then). A partial head in IDLE keeps the keep-alive deadline. FLUSH has none: the
#: connection's write deadline bounds it.
PHASE_TIMEOUTS: dict[Phase, str | None] = {
    Phase.IDLE: "keep_alive",
    Phase.HEAD: "header_timeout",
    Phase.BODY: "body_timeout",
    Phase.BUSY: None,
    Phase.DISCARD: "body_timeout",
    Phase.FLUSH: None,
    Phase.CLOSED: None,
}


class ServerState:
    """What the connections of one worker share: the app, config, counters, drain state."""

    def __init__(
        self,
        config: HTTPConfig,
        app: ASGIApp,
        loop: asyncio.AbstractEventLoop,
        *,
        retire: Callable[[], None] | None = None,
        report: Callable[[dict[str, Any]], None] | None = None,
        pool: WSGIPool | None = None,
    ) -> None:
        self.config = config
        #: The threads running a WSGI app (None: the app is ASGI, run in tasks).
        self.pool = pool
        #: What a request's ``Cycle`` is: the app runs in a task, or in a pool thread.
        self.cycle_type: type[Cycle] = Cycle if pool is None else WSGICycle
        #: Seconds of each phase's timeout, indexed by ``Phase`` (0.0: no deadline).
        self.timeouts = tuple(
            0.0 if name is None else float(getattr(config, name))
            for name in (PHASE_TIMEOUTS[phase] for phase in Phase)
        )
        self.scheme = "https" if config.ssl_certfile else "http"
        #: What every response carries unless the app sent it.
        self.head_defaults = HeadDefaults(
            date=config.date_header,
            server=config.server_header,
            extra=b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in config.headers),
        )
        #: The size limits of request heads and trailers.
        self.limits = Limits(
            line=config.limit_request_line,
            field=config.limit_request_field_size,
            head=config.limit_request_head,
            fields=config.limit_request_fields,
        )
        #: The request heads read last, shared by this worker's connections (``_parse``).
        self.heads: dict[bytes, RequestInfo] = {}
        #: Whether heads try the fast path before h11 (``--http``).
        self.fast_heads = config.http != "h11"
        self.app = app
        self.loop = loop
        #: What a request's duration is timed with (stats, access log): microseconds, where
        #: uvloop's ``loop.time()`` is rounded to the millisecond. Deadlines use the loop's.
        self.clock: Callable[[], float] = perf_counter
        self.retire = retire
        self.report = report
        self.stats = Stats()
        self._report_at = 0.0
        self.connections: set[Connection] = set()
        #: Called when a connection closes (the worker shares its count: ``_accept``).
        self.on_closed: Callable[[], None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.lifespan_state: dict[str, Any] = {}
        self.inflight = 0
        self.requests = 0
        self.max_requests = 0
        if config.max_requests:
            self.max_requests = config.max_requests + random.randint(0, config.max_requests_jitter)
        self.draining = False
        self.close_code = 1001  # a drain closes WebSockets so: 1012 when replaced (``drain``)
        self._trust: dict[str | None, bool] = {}
        self._idle: asyncio.Future[None] | None = None
        self._lingering = 0
        self._sweeper: asyncio.TimerHandle | None = None
        timeouts = (config.keep_alive, config.header_timeout, config.body_timeout)
        pings = (config.ws_ping_interval, config.ws_ping_timeout)
        self.sweep_interval = min(1.0, *(t / 4 for t in timeouts + pings if t))

    def trusts(self, host: str | None) -> bool:
        """Whether proxy headers from ``host`` are believed (cached per host)."""
        trusted = self._trust.get(host)
        if trusted is None:
            trusted = self._trust[host] = self.config.trusts(host)
        return trusted

    # -- requests --------------------------------------------------------------------------

    def request_started(self) -> None:
        """A request was admitted: count it (``max_requests`` retires the worker)."""
        self.requests += 1
        if self.requests == self.max_requests and self.retire is not None:
            self.retire()

    def start_app(self, cycle: AppCall) -> None:
        """Run the app for ``cycle`` in a task, counted in ``inflight`` until it ends (a
        WebSocket's app runs as long as its socket); a WSGI request in a pool thread."""
        self.inflight += 1
        if self.pool is not None and isinstance(cycle, WSGICycle):
            cycle.begin(self.pool.submit, self._app_finished)
            return
        self.tasks.add(self.loop.create_task(run_app(self.app, cycle, self._task_finished)))

    def _app_finished(self) -> None:
        self.inflight -= 1

    def _task_finished(self) -> None:
        """The app's task is ending (its last step runs this): let it go. Not a done-callback,
        which costs a callback scheduled on the loop per request."""
        self.inflight -= 1
        self.tasks.discard(asyncio.current_task(self.loop))

    # -- timeouts --------------------------------------------------------------------------

    def start_sweeping(self) -> None:
        """Check every connection's deadline every ``sweep_interval`` seconds."""
        self._sweeper = self.loop.call_later(self.sweep_interval, self._tick)

    def stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _tick(self) -> None:
        now = self.loop.time()
        self.sweep(now)
        self.start_sweeping()
        # Rescheduled first: a report that raises must not end the sweep. Half a sweep early,
        # so that a timer firing a little early does not skip a report.
        if now >= self._report_at and self.send_report():
            self._report_at = now + REPORT_INTERVAL - self.sweep_interval / 2

    def sweep(self, now: float) -> None:
        for conn in list(self.connections):
            conn.check_deadline(now)
        if self.pool is not None:
            self.pool.check()  # the WSGI threads' own --timeout

    def send_report(self) -> bool:
        """Send the master the metrics (``Stats.take``) if anything changed since the last
        report; whether one was sent."""
        if self.report is None:
            return False
        body = self.stats.take(self.requests, len(self.connections), self.inflight)
        if body is None:
            return False
        self.report(body)
        return True

    # -- drain -----------------------------------------------------------------------------

    def linger(self, transport: asyncio.BaseTransport) -> None:
        """Keep a refused connection's socket open for ``LINGER`` seconds after we close it
        (a lingering close, as Apache does): our answer and a FIN go out now, and what the
        client is still sending is taken in unread meanwhile. Closed at once, its unread input
        would make the kernel reset the connection, and a client still sending (a head in
        small writes) would see the reset instead of our 4xx. Bounded in count, and only when
        the answer already left the buffer (a FIN must come after it)."""
        sock = transport.get_extra_info("socket")
        if sock is None or self._lingering >= MAX_LINGERING:
            return
        if transport.get_write_buffer_size():  # type: ignore[attr-defined]
            return
        try:
            held = socket.socket(fileno=os.dup(sock.fileno()))
            held.shutdown(socket.SHUT_WR)
        except OSError:
            return
        self._lingering += 1
        self.loop.call_later(LINGER, self._unlinger, held)

    def _unlinger(self, held: socket.socket) -> None:
        self._lingering -= 1
        held.close()

    async def drain(self, idle_for: float | None = None, close_code: int = 1001) -> None:
        """Let busy connections finish their response (with ``Connection: close``) and idle
        keep-alive ones reach their keep-alive deadline (a request they bring meanwhile is
        answered with ``Connection: close``), or ``idle_for`` seconds from now if that comes
        first; close WebSockets with ``close_code``; wait for all to go."""
        self.draining = True
        self.close_code = close_code
        until = float("inf") if idle_for is None else self.loop.time() + idle_for
        for conn in list(self.connections):
            conn.start_drain(until)
        if self.connections:
            self._idle = self.loop.create_future()
            await self._idle

    def connection_closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if self.on_closed is not None:
            self.on_closed()
        if not self.connections and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

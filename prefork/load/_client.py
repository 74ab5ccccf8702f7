"""The client side of ``prefork load``: the target and its prebuilt request, and the three ways
of loading it from a worker's event loop.

- ``run_closed``: wrk's closed loop. Each connection sends, waits for the whole response, and
  sends again at once.
- ``run_open`` (``_openloop``): wrk2's open loop. Send k leaves when a schedule says it is
  due, on any idle connection, and its latency runs from when it was *meant* to leave, so a
  server that stalls cannot slow the client down and hide its stall (coordinated omission).
- ``run_scenario`` (``_scenario_run``): a user's ``async def scenario(client)`` in a loop on
  each ``Client``.

The drivers must not be what limits a benchmark, so they work at the ``asyncio.Protocol``
level: ``data_received`` parses, records and writes the next request, with no task, future or
timer per request. Plain connections are ``_direct``'s sockets, not uvloop's transports, and a
closed loop's whole response again is answered there, without a call to ``data_received``.
One timer per run finds the requests over ``timeout`` (it wakes when the oldest one in flight
would be), and the open loop has one more, armed for the next send.

Times: ``deadline`` and the schedule's times are seconds of ``time.monotonic()``, the clock of
``loop.time()`` (uvloop's ``loop.time()`` is the same clock rounded down to the millisecond;
anchor schedules on ``time.monotonic()`` for latencies exact below a millisecond). Latencies
are measured with ``time.monotonic_ns()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import typing

from prefork.load._direct import Sockets, SocketTransport
from prefork.load._response import ResponseParser
from prefork.load._target import Target

logger = logging.getLogger("prefork.load")

_MIN_BACKOFF = 0.01  # seconds before the first reconnect after a failure; doubled up to
_MAX_BACKOFF = 1.0  # this, so a server that is down does not keep the client busy
#: A send leaving this long after its intended time is late (``Tally.late``): behind schedule.
LATE_NS = 10_000_000


class Recorder(typing.Protocol):
    """Where responses and failures are counted (``prefork.load._tally.Tally``)."""

    sent: int
    late: int

    def record(self, status: int, latency_us: int, nbytes: int) -> None: ...

    def error(self, kind: str) -> None: ...

    def unanswered(self, latency_us: int, sent: bool = True) -> None: ...

    def connected(self, latency_us: int) -> None: ...

    def step(self, name: str, latency_us: int | None, failed: bool) -> None: ...

    def message(self, text: str) -> None: ...


class Schedule(typing.Protocol):
    """When the sends of an open loop are due (``prefork.load._schedule.RateSchedule``), from
    ``start`` on (the warm-up of the connections puts it off)."""

    start: float

    def due(self, now: float) -> int: ...

    def intended(self, k: int) -> float: ...


class _LogOnce:
    """Counts every failure's message in the tally (``--json``'s ``messages``) and logs each
    distinct one once: a failing server would otherwise log every request."""

    def __init__(self, tally: Recorder) -> None:
        self._seen: set[str] = set()
        self._tally = tally

    def __call__(self, message: str, exc: BaseException | None = None) -> None:
        self._tally.message(message)
        if message not in self._seen and len(self._seen) < 100:
            self._seen.add(message)
            logger.warning("%s", message, exc_info=exc)


class _Run:
    """The connections of one run until its deadline: connected, reconnected after a close or
    a failure (with a backoff when they got nothing done), timed out, and closed at the end.
    ``idle(conn, now_ns)`` is the one thing the closed and open loops do differently."""

    def __init__(
        self,
        target: Target,
        connections: int,
        deadline: float,
        tally: Recorder,
        timeout: float,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        if connections < 1 or not timeout > 0:
            raise ValueError(f"need connections >= 1 and timeout > 0, got {connections}, {timeout}")
        self.target = target
        self.connections = connections
        self.deadline = deadline
        self.deadline_ns = int(deadline * 1e9)
        self.tally = tally
        self.timeout = timeout
        self.timeout_ns = int(timeout * 1e9)
        self.loop = loop or asyncio.get_running_loop()
        self.live: set[_Conn] = set()
        self.stopping = False
        self.holding = True  # the warm-up: connections opened, nothing sent yet
        self.parked: list[_Conn] = []  # idle connections waiting for the warm-up's end
        self.tried = 0  # connections tried once (connected or failed)
        self._all_tried: asyncio.Future[None] = self.loop.create_future()
        self.log = _LogOnce(tally)
        self._address = (target.host, target.port)  # the peer's numbers once one connected
        #: ``--targets``: the next request and whether it is a HEAD, in turn (over every
        #: connection of the worker); None for the one request.
        self.rotate = itertools.cycle(target.rotation).__next__ if target.rotation else None
        self.sockets: Sockets | None = None  # while it serves, for plain http

    #: After a response the next request leaves at once (wrk's closed loop): the dispatcher
    #: of plain connections may send it itself (``_direct``).
    resends = False

    def idle(self, conn: _Conn, now_ns: int) -> None:
        raise NotImplementedError

    async def serve(self) -> float:
        """Run until the deadline; the time the connections' set-up put it off by."""
        # Plain connections are read and written here (``_direct``), TLS ones by uvloop.
        self.sockets = None if self.target.tls else Sockets(self.loop)
        slots = [self.loop.create_task(self._slot()) for _ in range(self.connections)]
        self._sweeper = self.loop.call_later(self.timeout, self._sweep)
        try:
            shift = await self._warm_up()
            while (left := self.deadline - time.monotonic()) > 0:
                await asyncio.sleep(left)
        finally:
            self.stopping = True
            self._sweeper.cancel()
            self.stop()
            self.end(min(time.monotonic_ns(), self.deadline_ns))
            for conn in list(self.live):
                conn.transport.abort()
            for slot in slots:
                slot.cancel()
            try:
                await asyncio.gather(*slots, return_exceptions=True)  # each waits for its close
            finally:  # cancelled again meanwhile (a second Ctrl-C): the epoll still goes
                if self.sockets is not None:
                    self.sockets.close()
        return shift

    async def _warm_up(self) -> float:
        """Hold the first sends until every connection was tried once (or ``timeout``), then
        put the deadline (and an open loop's schedule) off by the time that took: connection
        set-up is its own figure (``Tally.connected``), never the requests' latency."""
        began = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await self._all_tried
        shift = time.monotonic() - began
        self.begin(shift)
        return shift

    def begin(self, shift: float) -> None:
        """The warm-up is over: ``shift`` seconds later than planned, the run begins."""
        self.deadline += shift
        self.deadline_ns = int(self.deadline * 1e9)
        self.holding = False
        parked, self.parked = self.parked, []
        now_ns = time.monotonic_ns()
        for conn in parked:
            if conn in self.live:
                self.idle(conn, now_ns)

    def stop(self) -> None:
        """The deadline: no more sends."""

    def end(self, end_ns: int) -> None:
        """The run ended at ``end_ns`` (its deadline, or earlier when cut short): each request
        still in flight is unanswered, its latency running up to the end."""
        for conn in self.live:
            if conn.busy and not conn.failed:
                conn.failed = True
                self.tally.unanswered(max(0, end_ns - conn.intended_ns) // 1000)

    def closed(self, conn: _Conn) -> None:
        self.live.discard(conn)

    async def _slot(self) -> None:
        delay = 0.0
        while True:
            conn = _Conn(self)
            try:
                await self._open(conn)
            except (OSError, TimeoutError) as exc:
                self._tried()
                self.tally.error("connect")
                reason = str(exc) or f"no connection within {self.timeout:g} s"
                self.log(f"cannot connect to {self.target.authority}: {reason}")
            else:
                self._tried()
                try:
                    await asyncio.shield(conn.done)
                except asyncio.CancelledError:  # the run's end, which aborted it: wait for that
                    await conn.done
                    raise
                if conn.answered:
                    delay = 0.0
                    continue
            delay = min(max(2 * delay, _MIN_BACKOFF), _MAX_BACKOFF)
            await asyncio.sleep(delay)

    async def _open(self, conn: _Conn) -> None:
        start = time.monotonic_ns()
        target = self.target
        try:
            async with asyncio.timeout(self.timeout):
                if self.sockets is None:
                    transport, _ = await self.loop.create_connection(
                        lambda: conn, *self._address, **target.tls
                    )
                else:
                    transport, _ = await self.sockets.connect(lambda: conn, *self._address)
        except asyncio.CancelledError:
            # Cancelled after connection_made (a TLS connection: uvloop's), uvloop closes the
            # transport without calling connection_lost: the connection is gone all the same.
            self.closed(conn)
            raise
        self._address = transport.get_extra_info("peername")[:2]
        self.tally.connected((time.monotonic_ns() - start) // 1000)

    def _tried(self) -> None:
        self.tried += 1
        if self.tried == self.connections:  # once: a reconnection counts on from there
            self._all_tried.set_result(None)

    def _sweep(self) -> None:
        """Fail the requests in flight for ``timeout``; wake when the oldest left would be."""
        now = time.monotonic_ns()
        oldest = now
        for conn in list(self.live):
            if conn.busy and not conn.failed:
                if now - conn.sent_ns >= self.timeout_ns:
                    conn.fail("timeout")
                else:
                    oldest = min(oldest, conn.sent_ns)
        wait = (oldest + self.timeout_ns - now) / 1e9 + 0.001  # uvloop's timers: milliseconds
        self._sweeper = self.loop.call_later(wait, self._sweep)


class _Conn(asyncio.Protocol):
    """One connection of a run: sends the target's request when told, records its response."""

    __slots__ = (
        "_eof",
        "_feed",
        "_idle",
        "_record",
        "_write",
        "answered",
        "busy",
        "done",
        "failed",
        "intended_ns",
        "parser",
        "request",
        "run",
        "sent_ns",
        "transport",
    )

    def __init__(self, run: _Run) -> None:
        parser = ResponseParser(head_request=run.target.head_request)
        self.run = run
        self.parser = parser
        self._feed = parser.feed
        self._eof = parser.feed_eof
        self._record = run.tally.record
        self._idle = run.idle
        self.request = run.target.request
        self.done: asyncio.Future[None] = run.loop.create_future()
        self.answered = 0
        self.busy = False  # a request is in flight
        self.failed = False  # its failure is counted already
        self.intended_ns = 0  # where its latency runs from
        self.sent_ns = 0  # where its timeout runs from

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)
        if isinstance(transport, SocketTransport) and self.run.resends and self.run.rotate is None:
            transport.hot = self  # the dispatcher answers its whole responses again itself
        self._write = self.transport.write
        self.run.live.add(self)
        if self.run.stopping:
            self.transport.abort()
        else:
            self._idle(self, time.monotonic_ns())

    def send(self, intended_ns: int, now_ns: int) -> None:
        self.busy = True
        self.intended_ns = intended_ns
        self.sent_ns = now_ns
        self.run.tally.sent += 1
        rotate = self.run.rotate
        if rotate is None:
            self._write(self.request)
        else:
            request, self.parser.head_request = rotate()
            self._write(request)
        if self.transport.is_closing():  # the write failed: uvloop closes at once
            self.fail("write")

    def data_received(self, data: bytes) -> None:
        if self.failed:  # counted and aborted already (bytes read before the abort)
            return
        try:
            responses = self._feed(data)
        except ValueError as exc:
            self.fail("read", f"bad response from {self.run.target.authority}: {exc}")
            return
        now = time.monotonic_ns()
        for status, nbytes, keep_alive, _, _ in responses:
            if not self.busy:
                self.fail("read", f"{self.run.target.authority} answered no request")
                return
            if now >= self.run.deadline_ns:
                return  # too late: the run's end counts it unanswered
            self._record(status, (now - self.intended_ns) // 1000, nbytes)
            self.busy = False
            self.answered += 1
            if len(responses) > 1:  # one request in flight, two answers: pairs would be wrong
                self.fail("read", f"{self.run.target.authority} answered one request twice")
                return
            if not keep_alive:
                self.transport.close()
                return
            self._idle(self, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.closed(self)
        self.done.set_result(None)
        if not self.busy or self.failed or self.run.stopping:
            return
        now = time.monotonic_ns()
        try:
            ended = self._eof() if exc is None else []
        except ValueError:
            ended = []
        if now >= self.run.deadline_ns:
            self.failed = True
            self.run.tally.unanswered((self.run.deadline_ns - self.intended_ns) // 1000)
            return
        for status, nbytes, _, _, _ in ended:  # a body that ran until the close
            self._record(status, (now - self.intended_ns) // 1000, nbytes)
            self.answered += 1
            return
        self.run.tally.error("read")
        reason = exc or "closed"
        self.run.log(f"{self.run.target.authority} dropped a request in flight: {reason}")

    def fail(self, kind: str, why: str | None = None) -> None:
        """Count the request in flight (if any) as failed and drop the connection."""
        self.failed = True
        self.run.tally.error(kind)
        if why is not None:
            self.run.log(why)
        self.transport.abort()


class _ClosedRun(_Run):
    resends = True

    def idle(self, conn: _Conn, now_ns: int) -> None:
        if self.holding:
            self.parked.append(conn)
        elif now_ns < self.deadline_ns:
            conn.send(now_ns, now_ns)


async def run_closed(
    target: Target,
    connections: int,
    deadline: float,
    tally: Recorder,
    *,
    timeout: float,
    loop: asyncio.AbstractEventLoop | None = None,
) -> float:
    """Load ``target`` with a closed loop (wrk's) on ``connections`` keep-alive connections
    until ``deadline``: each sends the request, waits for its response, and sends again.

    Records each response (latency from its send) and each failure in ``tally``: "connect"
    (retried with a backoff), "read" (a malformed response, or a close or reset in the middle
    of one), "write", "timeout" (no response within ``timeout`` seconds: the connection is
    dropped). A connection the server closes is reopened. The first sends wait until every
    connection was tried once (``timeout`` at most), and the deadline is put off by that
    warm-up. Requests in flight at the deadline are unanswered (``tally.unanswered``).
    Returns, once every connection is closed, the warm-up's length in seconds; raises
    ValueError when ``connections`` < 1 or ``timeout`` <= 0.
    """
    return await _ClosedRun(target, connections, deadline, tally, timeout, loop).serve()

"""User scenarios for ``prefork load --scenario module:func``: a ``Client`` that issues requests
one at a time on a keep-alive connection (bodies kept, for the scenario to read), each one's
latency or failure recorded in the tally as the drivers of ``_client`` record theirs, and
``run_scenario``, which runs ``await func(client)`` again and again on each connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from prefork.load._client import _MAX_BACKOFF, _MIN_BACKOFF, Recorder, _LogOnce
from prefork.load._response import Headers, ResponseParser
from prefork.load._target import Target


@dataclass(frozen=True, slots=True)
class Response:
    """A response a ``Client`` received: status, fields as received, the whole body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of the first field called ``name`` (any case), or None."""
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)


class RequestError(Exception):
    """A ``Client`` request failed, and was counted in the tally as an error of ``kind``
    ("connect", "read", "write" or "timeout")."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Client:
    """One keep-alive connection for a scenario: ``await client.request(...)`` sends a
    request and returns its whole ``Response``; its latency (or failure) goes into ``tally``
    as the drivers' do. Connects on the first request and again after the server closed.

    One request at a time (``RuntimeError`` otherwise); a failed request raises
    ``RequestError``, already counted. ``deadline`` (``time.monotonic()`` seconds) is the end
    of the run: a response that comes later is returned but not counted, and a request made
    later is not sent but raises ``asyncio.CancelledError``, as the run's end would.
    """

    def __init__(
        self,
        target: Target,
        tally: Recorder,
        *,
        timeout: float,
        deadline: float | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.target = target
        self.tally = tally
        self.timeout = timeout
        self.deadline_ns = int(deadline * 1e9) if deadline is not None else None
        self.loop = loop or asyncio.get_running_loop()
        self._conn: _ClientConn | None = None
        self._busy = False

    async def request(
        self,
        method: str = "GET",
        path: str = "/",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> Response:
        """Send ``method path`` (with the target's fields, ``headers`` replacing those of the
        same names, and ``body``) and return the response. Raises ``RequestError`` when it
        failed (no connection, a close, a malformed response or one with a body over 16 MiB,
        no answer within the timeout), ``ValueError`` on a malformed request."""
        if self._busy:
            raise RuntimeError("a Client sends one request at a time: use one per task")
        data = self.target.build(method, path, headers, body)
        if not self.counts(time.monotonic_ns()):
            raise asyncio.CancelledError("the run is over")
        self._busy = True
        try:
            conn = self._conn
            if conn is None or conn.transport.is_closing():
                conn = self._conn = await self._connect()
            return await conn.exchange(data, method == "HEAD")
        finally:
            self._busy = False

    @contextlib.asynccontextmanager
    async def timed(self, status: int = 200) -> AsyncIterator[None]:
        """Record the ``async with`` block as one request: its duration as the latency and
        ``status`` as its status; an exception in it as a "timeout" (``TimeoutError``) or
        "read" error, re-raised as ``RequestError`` (counted once). For what the client does
        not speak itself: a WebSocket round trip with any library, a call over another
        protocol."""
        start = time.monotonic_ns()
        try:
            yield
        except RequestError:
            raise
        except Exception as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "read"
            if self.counts(time.monotonic_ns()):
                self.tally.error(kind, (time.monotonic_ns() - start) // 1000)
            raise RequestError(kind, f"{type(exc).__name__}: {exc}") from exc
        now = time.monotonic_ns()
        if self.counts(now):
            self.tally.record(status, (now - start) // 1000, 0)

    async def close(self) -> None:
        """Close the connection (a request in flight fails) and wait until it is closed."""
        if self._conn is not None:
            self._conn.transport.abort()
            await self._conn.closed

    async def _connect(self) -> _ClientConn:
        target = self.target
        try:
            async with asyncio.timeout(self.timeout):
                _, conn = await self.loop.create_connection(
                    lambda: _ClientConn(self), target.host, target.port
                )
        except (OSError, TimeoutError) as exc:
            self.tally.error("connect")
            reason = exc or "timed out"
            raise RequestError(
                "connect", f"cannot connect to {target.authority}: {reason}"
            ) from exc
        return conn

    def counts(self, now_ns: int) -> bool:
        return self.deadline_ns is None or now_ns < self.deadline_ns


class _ClientConn(asyncio.Protocol):
    """A ``Client``'s connection: one request's waiter at a time, bodies kept."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._parser = ResponseParser(keep=True)
        self._waiter: asyncio.Future[Response] | None = None
        self._start_ns = 0
        self.closed: asyncio.Future[None] = client.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)

    async def exchange(self, data: bytes, head_request: bool) -> Response:
        client = self._client
        self._parser.head_request = head_request
        waiter: asyncio.Future[Response] = client.loop.create_future()
        self._waiter = waiter
        self._start_ns = time.monotonic_ns()
        self.transport.write(data)
        if self.transport.is_closing():  # the write failed: uvloop closes at once
            self._fail("write", f"cannot send to {client.target.authority}")
        try:
            async with asyncio.timeout(client.timeout):
                return await waiter
        except TimeoutError:
            self._count("timeout")
            self.transport.abort()
            raise RequestError("timeout", f"no response within {client.timeout} s") from None
        except asyncio.CancelledError:
            self.transport.abort()  # the run's end: nothing is counted
            raise
        finally:
            self._waiter = None

    def data_received(self, data: bytes) -> None:
        try:
            responses = self._parser.feed(data)
        except ValueError as exc:
            self._fail("read", f"bad response: {exc}")
            return
        for status, nbytes, keep_alive, headers, body in responses:
            self._complete(status, nbytes, headers, body)
            if not keep_alive:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            ended = self._parser.feed_eof() if exc is None else []
        except ValueError:
            ended = []
        for status, nbytes, _, headers, body in ended:
            self._complete(status, nbytes, headers, body)
            return
        self._fail("read", f"the connection closed before the response ({exc or 'EOF'})")

    def _complete(self, status: int, nbytes: int, headers: Headers, body: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self._fail("read", "a response to no request")
            return
        now = time.monotonic_ns()
        if self._client.counts(now):
            self._client.tally.record(status, (now - self._start_ns) // 1000, nbytes)
        waiter.set_result(Response(status, list(headers), body))

    def _fail(self, kind: str, why: str) -> None:
        """Count the request waiting (if any) as failed, fail it, and drop the connection."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._count(kind)
            waiter.set_exception(RequestError(kind, why))
        self.transport.abort()

    def _count(self, kind: str) -> None:
        now = time.monotonic_ns()
        if self._client.counts(now):
            latency = None if kind == "write" else (now - self._start_ns) // 1000
            self._client.tally.error(kind, latency)


Scenario = Callable[[Client], Awaitable[object]]


async def run_scenario(
    func: Scenario,
    target: Target,
    connections: int,
    deadline: float,
    tally: Recorder,
    *,
    timeout: float,
    loop: asyncio.AbstractEventLoop | None = None,
) -> None:
    """Run ``await func(client)`` again and again on ``connections`` clients at once until
    ``deadline``. Each request the scenario makes is recorded by its ``Client``. An exception
    the scenario lets out is an error of kind "timeout" for a ``TimeoutError``, "read" for
    anything else (a ``RequestError`` is counted already), logged once per distinct message;
    the client then pauses a little (doubled on each failure in a row, up to a second). A
    scenario still running at the deadline is cancelled and what it had in flight is not
    counted. Returns once every connection is closed.
    """
    if connections < 1 or not timeout > 0:
        raise ValueError(f"need connections >= 1 and timeout > 0, got {connections}, {timeout}")
    loop = loop or asyncio.get_running_loop()
    clients = [
        Client(target, tally, timeout=timeout, deadline=deadline, loop=loop)
        for _ in range(connections)
    ]
    log = _LogOnce()

    async def repeat(client: Client) -> None:
        delay = 0.0
        while time.monotonic() < deadline:
            try:
                await func(client)
            except RequestError:
                pass
            except Exception as exc:
                tally.error("timeout" if isinstance(exc, TimeoutError) else "read")
                log(f"the scenario failed: {type(exc).__name__}: {exc}", exc)
            else:
                delay = 0.0
                continue
            delay = min(max(2 * delay, _MIN_BACKOFF), _MAX_BACKOFF)
            await asyncio.sleep(delay)

    tasks = [loop.create_task(repeat(client)) for client in clients]
    try:
        await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(client.close() for client in clients))

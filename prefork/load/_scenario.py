"""User scenarios for ``prefork load --scenario module:func``: a ``Client`` that issues requests
one at a time on a keep-alive connection (bodies kept, for the scenario to read), each one's
latency or failure recorded in the tally as the drivers of ``_client`` record theirs.
``run_scenario`` (``_scenario_run.py``) runs ``await func(client)`` again and again on each
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import typing
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from prefork.load._client import Recorder
from prefork.load._response import Headers, ResponseParser
from prefork.load._steps import step_name
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
        self.failures = 0  # requests that failed or answered >= 400, for run_scenario
        #: An open loop's intended start of this iteration: its first request's latency runs
        #: from there (then it is None, and each request's latency runs from its send).
        self.origin_ns: int | None = None
        self.step = ""  # the step of the request in flight (``_steps``)

    async def request(
        self,
        method: str = "GET",
        path: str = "/",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        *,
        name: str | None = None,
    ) -> Response:
        """Send ``method path`` (with the target's fields, ``headers`` replacing those of the
        same names, and ``body``) and return the response; it is counted under the step
        ``name`` (by default its method and path without the query: ``_steps``). Raises
        ``RequestError`` when it failed (no connection, a close, a malformed response or one
        with a body over 16 MiB, no answer within the timeout), ``ValueError`` on a malformed
        request."""
        if self._busy:
            raise RuntimeError("a Client sends one request at a time: use one per task")
        data = self.target.build(method, path, headers, body)
        if not self.counts(time.monotonic_ns()):
            raise asyncio.CancelledError("the run is over")
        step = step_name(method, path, name)
        self._busy = True
        self.step = step
        try:
            conn = self._conn
            if conn is None or conn.transport.is_closing():
                conn = self._conn = await self._connect()
            return await conn.exchange(data, method == "HEAD")
        finally:
            self._busy = False

    async def get(
        self, path: str = "/", *, headers: Iterable[tuple[str, str]] = (), name: str | None = None
    ) -> Response:
        """``request("GET", path, headers, name=name)``."""
        return await self.request("GET", path, headers, name=name)

    async def post(
        self,
        path: str = "/",
        body: bytes | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        name: str | None = None,
    ) -> Response:
        """``request("POST", path, headers, body, name=name)``."""
        return await self.request("POST", path, headers, body, name=name)

    @contextlib.asynccontextmanager
    async def timed(self, status: int = 200, name: str = "timed") -> AsyncIterator[None]:
        """Record the ``async with`` block as one request of step ``name``: its duration as
        the latency and ``status`` as its status; an exception in it as a "timeout"
        (``TimeoutError``) or "read" error, re-raised as ``RequestError`` (counted once). For
        what the client does not speak itself: a WebSocket round trip with any library, a
        call over another protocol."""
        if not isinstance(name, str):  # here, not in the tally
            raise TypeError(f"a step's name is a string, got {name!r:.60}")
        start = time.monotonic_ns()
        try:
            yield
        except RequestError:
            raise
        except Exception as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "read"
            if self.counts(time.monotonic_ns()):
                self.failures += 1
                self.tally.error(kind)
                self.tally.step(name, None, True)
            raise RequestError(kind, f"{type(exc).__name__}: {exc}") from exc
        now = time.monotonic_ns()
        if self.counts(now):
            self.failures += status >= 400
            self.tally.record(status, (now - start) // 1000, 0)
            self.tally.step(name, (now - start) // 1000, status >= 400)

    async def close(self) -> None:
        """Close the connection (a request in flight fails) and wait until it is closed."""
        if self._conn is not None:
            self._conn.transport.abort()
            await self._conn.closed

    async def _connect(self) -> _ClientConn:
        target = self.target
        start = time.monotonic_ns()
        try:
            async with asyncio.timeout(self.timeout):
                _, conn = await self.loop.create_connection(
                    lambda: _ClientConn(self), target.host, target.port, **target.tls
                )
        except (OSError, TimeoutError) as exc:
            self.failures += 1
            self.tally.error("connect")
            self.tally.step(self.step, None, True)
            reason = str(exc) or f"no connection within {self.timeout:g} s"
            raise RequestError(
                "connect", f"cannot connect to {target.authority}: {reason}"
            ) from exc
        self.tally.connected((time.monotonic_ns() - start) // 1000)
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
        if client.origin_ns is not None:
            self._start_ns, client.origin_ns = client.origin_ns, None
        client.tally.sent += 1
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
            # The run's end: the request is unanswered, its latency running up to the end.
            end = time.monotonic_ns()
            if client.deadline_ns is not None:
                end = min(end, client.deadline_ns)
            if waiter.cancelled():  # not answered (an answer would have been counted)
                waited = max(0, end - self._start_ns) // 1000
                client.tally.unanswered(waited)
                client.tally.step(client.step, waited, False)
            self.transport.abort()
            raise
        finally:
            self._waiter = None

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():  # aborted (the run's end), with bytes already read
            return
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
        if waiter is not None and waiter.cancelled():
            return  # given up (the run's end) just before its answer came: unanswered
        if waiter is None or waiter.done():  # two answers to one request: flagged, dropped
            self._client.tally.error("read")
            self._client.tally.message(f"{self._client.target.authority} answered no request")
            self.transport.abort()
            return
        now = time.monotonic_ns()
        client = self._client
        if client.counts(now):
            client.failures += status >= 400
            latency = (now - self._start_ns) // 1000
            client.tally.record(status, latency, nbytes)
            client.tally.step(client.step, latency, status >= 400)
        else:  # answered after the end: unanswered at the end
            end = typing.cast(int, client.deadline_ns)
            waited = max(0, end - self._start_ns) // 1000
            client.tally.unanswered(waited)
            client.tally.step(client.step, waited, False)
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
            self._client.failures += 1
            self._client.tally.error(kind)
            self._client.tally.step(self._client.step, None, True)

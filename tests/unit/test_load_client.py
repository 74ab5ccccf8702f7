"""The load client: Target, the closed and open loops, Client and run_scenario, against a tiny
asyncio server on 127.0.0.1 (port 0) whose every answer the test decides.

Counts are checked exactly where they can be: what the client recorded is what the server
answered, less at most one request per connection in flight at the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
import time
import typing
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import uvloop

from prefork.load._client import _ClosedRun, _Conn, run_closed
from prefork.load._openloop import _OpenRun, run_open
from prefork.load._scenario import Client, RequestError, Response
from prefork.load._scenario_run import run_scenario
from prefork.load._target import Target

T = TypeVar("T")
HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\n"
)
UNTIL_EOF = b"HTTP/1.1 200 OK\r\nServer: t\r\n\r\nuntil the close"
CLOSING = b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy"
MALFORMED = b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"
_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)")


class FakeTally:
    """What ``Tally`` is asked to record, in order."""

    def __init__(self) -> None:
        self.records: list[tuple[int, int, int]] = []
        self.errors: list[str] = []
        self.unanswered_at_end: list[tuple[int, bool]] = []  # (latency, sent)
        self.connects: list[int] = []
        self.messages: list[str] = []
        self.steps: list[tuple[str, int | None, bool]] = []
        self.sent = 0
        self.late = 0

    def record(self, status: int, latency_us: int, nbytes: int) -> None:
        self.records.append((status, latency_us, nbytes))

    def error(self, kind: str) -> None:
        self.errors.append(kind)

    def unanswered(self, latency_us: int, sent: bool = True) -> None:
        self.unanswered_at_end.append((latency_us, sent))

    def connected(self, latency_us: int) -> None:
        self.connects.append(latency_us)

    def step(self, name: str, latency_us: int | None, failed: bool) -> None:
        self.steps.append((name, latency_us, failed))

    def message(self, text: str) -> None:
        self.messages.append(text)

    def kinds(self) -> set[str]:
        return set(self.errors)


@dataclass
class Answer:
    """What the server does with one request: wait ``after`` seconds, write ``data``, then
    keep the connection, ``close`` it (FIN) or ``reset`` it (RST)."""

    data: bytes = b""
    then: str = "keep"
    after: float = 0.0


Reply = Callable[[int, bytes], Answer]  # (request number from 0, request head and body)


@dataclass
class Server:
    """A tiny HTTP/1.1 server: splits requests (Content-Length bodies), answers each with
    ``reply``, and counts what it received and answered."""

    reply: Reply
    received: int = 0
    answered: int = 0  # answers written with data
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def start(self) -> Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ServerConn(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def stop(self) -> None:
        self._server.close()


class _ServerConn(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = b""
        server.connections += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            length = _LENGTH.search(self.buf, 0, end)
            size = end + 4 + (int(length[1]) if length else 0)
            if len(self.buf) < size:
                return
            request, self.buf = self.buf[:size], self.buf[size:]
            server = self.server
            server.requests.append(request)
            answer = server.reply(server.received, request)
            server.received += 1
            if answer.after:
                asyncio.get_running_loop().call_later(answer.after, self.answer, answer)
            else:
                self.answer(answer)

    def answer(self, answer: Answer) -> None:
        if self.transport.is_closing():
            return
        if answer.data:
            self.transport.write(answer.data)
            self.server.answered += 1
        if answer.then == "close":
            self.transport.close()
        elif answer.then == "reset":
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()


def always(answer: Answer) -> Reply:
    return lambda n, request: answer


def run(main: Callable[[], Awaitable[T]]) -> T:
    return uvloop.run(main())  # type: ignore[arg-type]


def closed_port() -> int:
    """A port nobody listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def closed_loop(
    reply: Reply, connections: int = 4, seconds: float = 0.3, timeout: float = 1.0, path: str = "/"
) -> tuple[Server, FakeTally]:
    server = await Server(reply).start()
    tally = FakeTally()
    deadline = time.monotonic() + seconds
    await run_closed(Target(server.url(path)), connections, deadline, tally, timeout=timeout)
    await server.stop()
    return server, tally


class Constant:
    """A schedule: ``rate`` sends a second from ``start``."""

    def __init__(self, rate: float, start: float) -> None:
        self.rate = rate
        self.start = start

    def intended(self, k: int) -> float:
        return self.start + k / self.rate

    def due(self, now: float) -> int:
        return 0 if now < self.start else int((now - self.start) * self.rate) + 1


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    with caplog.at_level(logging.WARNING, logger="prefork.load"):
        yield lambda: [r.getMessage() for r in caplog.records if r.name == "prefork.load"]


# Target


def test_target_builds_the_request_once() -> None:
    target = Target("http://example.com/a/b?x=1&y=2#frag", headers=["X-A:  1 ", "x-b:2"])
    assert (target.host, target.port, target.authority) == ("example.com", 80, "example.com")
    assert (
        target.request
        == b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\nx-b: 2\r\n\r\n"
    )
    post = Target("http://127.0.0.1:8000", method="POST", body=b"{}", headers=["host: other"])
    assert post.request == b"POST / HTTP/1.1\r\nhost: other\r\nContent-Length: 2\r\n\r\n{}"
    assert not post.head_request
    assert Target("http://h/", method="HEAD", body=b"").request.endswith(
        b"Content-Length: 0\r\n\r\n"
    )
    assert Target("http://h/", method="HEAD").head_request


def test_target_ipv6_and_ports() -> None:
    target = Target("http://[::1]:8000/")
    assert (target.host, target.port, target.authority) == ("::1", 8000, "[::1]:8000")
    assert Target("http://[::1]/").authority == "[::1]"
    assert Target("HTTP://H:80/").authority == "h"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://example.com/", r"give http\[s\]://HOST\[:PORT\]/PATH"),
        ("example.com:80", r"give http\[s\]://"),
        ("http:///path", r"give http\[s\]://"),
        ("http://h:0/", r"give http\[s\]://"),
        ("http://h:99999/", "Port out of range"),
        ("http://h:x/", "cannot load 'http://h:x/'"),
        ("http://[::1/", "Invalid IPv6 URL"),
        ("http://user:pw@h/", "credentials"),
        ("http://h/a b", "path '/a b' must start with /"),
        ("http://h/é", "percent-encode"),
    ],
)
def test_target_refuses_what_it_cannot_load(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Target(url)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"method": "G T"}, "method 'G T' is not an HTTP token"),
        ({"headers": ["no colon"]}, "header 'no colon' must look like 'Name: value'"),
        ({"headers": ["Bad Name: v"]}, "is not a valid field"),
        ({"headers": ["X: a\rb"]}, "is not a valid field"),
        ({"headers": ["X: ☃"]}, "outside Latin-1"),
        ({"headers": ["Content-Length: 3"], "body": b"abc"}, "Content-Length is set from the body"),
    ],
)
def test_target_refuses_a_malformed_request(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Target("http://h/", **options)


def test_build_replaces_the_target_fields_of_the_same_names() -> None:
    target = Target("http://h:81/", headers=["Authorization: a", "X-Keep: k"])
    assert target.build("PUT", "/p", [("authorization", "b")], b"x") == (
        b"PUT /p HTTP/1.1\r\nHost: h:81\r\nX-Keep: k\r\nauthorization: b\r\n"
        b"Content-Length: 1\r\n\r\nx"
    )
    assert target.build("OPTIONS", "*").startswith(b"OPTIONS * HTTP/1.1\r\n")
    assert Target("http://h/", headers=["Content-Length: 0"]).request.endswith(b"Length: 0\r\n\r\n")


# The closed loop


@pytest.mark.parametrize("response", [HELLO, CHUNKED], ids=["content-length", "chunked"])
def test_closed_loop_records_what_the_server_answered(response: bytes) -> None:
    server, tally = run(lambda: closed_loop(always(Answer(response)), path="/x?y=1"))
    assert tally.errors == []
    assert 100 < len(tally.records) <= server.answered <= len(tally.records) + 4
    assert {(s, n) for s, _, n in tally.records} == {(200, len(response))}
    assert all(0 < latency < 300_000 for _, latency, _ in tally.records)
    assert set(server.requests) == {
        f"GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    }
    assert server.connections == 4


@pytest.mark.parametrize(
    "answer",
    [Answer(UNTIL_EOF, "close"), Answer(CLOSING), Answer(CLOSING, "close")],
    ids=["until-eof", "connection-close", "connection-close-then-fin"],
)
def test_closed_loop_reconnects_when_the_server_closes(answer: Answer) -> None:
    server, tally = run(lambda: closed_loop(always(answer)))
    assert tally.errors == []
    assert 20 < len(tally.records) <= server.answered <= len(tally.records) + 4
    assert server.connections >= len(tally.records)  # one request per connection
    status = int(answer.data[9:12])
    assert {(s, n) for s, _, n in tally.records} == {(status, len(answer.data))}


@pytest.mark.parametrize(
    ("answer", "log"),
    [
        (Answer(MALFORMED), "bad response from 127.0.0.1:.*: malformed header line"),
        (Answer(HELLO[:-2], "close"), "dropped a request in flight: closed"),
        (Answer(b"", "close"), "dropped a request in flight: closed"),
        (Answer(b"", "reset"), "dropped a request in flight: .*reset"),
    ],
    ids=["malformed", "cut-short", "closed-unanswered", "reset"],
)
def test_closed_loop_read_errors(
    answer: Answer, log: str, warnings: Callable[[], list[str]]
) -> None:
    server, tally = run(lambda: closed_loop(always(answer), connections=2))
    assert tally.records == []
    assert tally.kinds() == {"read"}
    # Each failed connection got nothing done: its slot backs off (10, 20, 40 ms...).
    assert 2 <= len(tally.errors) <= 20
    assert len(tally.errors) <= server.received
    assert len(warnings()) == 1 and re.search(log, warnings()[0])
    assert all(re.search(log, m) for m in tally.messages)  # each counted for --json


def test_closed_loop_a_keep_alive_close_after_the_response_races_the_next_request() -> None:
    _, tally = run(lambda: closed_loop(always(Answer(HELLO, "close"))))
    assert len(tally.records) > 10
    assert tally.kinds() <= {"read"}  # the next request was sent before the FIN came


def test_closed_loop_timeouts_drop_the_connection(warnings: Callable[[], list[str]]) -> None:
    server, tally = run(lambda: closed_loop(always(Answer()), 2, 0.35, timeout=0.1))
    assert tally.records == []
    assert tally.kinds() == {"timeout"}
    assert 4 <= len(tally.errors) <= 6  # at 0.1, 0.2x and 0.3x s on each connection
    assert len(tally.errors) <= server.connections <= len(tally.errors) + 2  # + cut by the deadline
    assert warnings() == []


def test_closed_loop_slow_answers_within_the_timeout_are_not_errors() -> None:
    _, tally = run(lambda: closed_loop(always(Answer(HELLO, after=0.05)), 2, 0.3, 0.5))
    assert tally.errors == []
    assert 8 <= len(tally.records) <= 12
    assert all(45_000 <= latency < 100_000 for _, latency, _ in tally.records)  # ms timers


def test_closed_loop_connect_failures_back_off(warnings: Callable[[], list[str]]) -> None:
    async def main() -> FakeTally:
        tally = FakeTally()
        target = Target(f"http://127.0.0.1:{closed_port()}/")
        await run_closed(target, 2, time.monotonic() + 0.3, tally, timeout=1.0)
        return tally

    tally = run(main)
    assert tally.records == []
    assert set(tally.errors) == {"connect"}
    assert 4 <= len(tally.errors) <= 16  # 10, 20, 40, 80, 160 ms apart: no spinning
    assert len(warnings()) == 1 and "Connection refused" in warnings()[0]


def test_closed_loop_connect_timeouts() -> None:
    async def main() -> FakeTally:
        with socket.socket() as listener:  # a backlog of 1, never accepted: later SYNs wait
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            tally = FakeTally()
            target = Target(f"http://127.0.0.1:{port}/")
            await run_closed(target, 3, time.monotonic() + 0.3, tally, timeout=0.1)
            return tally

    tally = run(main)
    assert "connect" in tally.errors
    assert tally.kinds() == {"connect", "timeout"}  # the one connection queued times out


def test_closed_loop_refuses_bad_arguments() -> None:
    async def main(connections: int, timeout: float) -> None:
        await run_closed(Target("http://h/"), connections, 0.0, FakeTally(), timeout=timeout)

    for args in ((0, 1.0), (1, 0.0)):
        with pytest.raises(ValueError, match="need connections >= 1 and timeout > 0"):
            uvloop.run(main(*args))


# The open loop


def test_open_loop_sends_at_the_rate() -> None:
    async def main() -> tuple[Server, FakeTally]:
        server = await Server(always(Answer(HELLO))).start()
        tally = FakeTally()
        start = time.monotonic() + 0.02
        schedule = Constant(2000, start)
        await run_open(Target(server.url()), 8, schedule, start + 0.5, tally, timeout=1.0)
        await server.stop()
        return server, tally

    server, tally = run(main)
    assert abs(server.received - 1000) <= 20  # 2000/s for 0.5 s, within 2%
    assert len(tally.records) <= server.answered <= len(tally.records) + 8
    assert tally.errors == []
    assert sorted(latency for _, latency, _ in tally.records)[len(tally.records) // 2] < 50_000


def test_open_loop_measures_a_stall_from_the_intended_send_times() -> None:
    stall = [0.0, 0.0]  # the server answers nothing received between these times until the end

    def reply(n: int, request: bytes) -> Answer:
        now = time.monotonic()
        return Answer(HELLO, after=stall[1] - now if stall[0] <= now < stall[1] else 0.0)

    async def main() -> tuple[Server, FakeTally]:
        server = await Server(reply).start()
        tally = FakeTally()
        start = time.monotonic() + 0.02
        stall[:] = [start + 0.1, start + 0.3]
        schedule = Constant(1000, start)
        await run_open(Target(server.url()), 4, schedule, start + 0.5, tally, timeout=1.0)
        await server.stop()
        return server, tally

    server, tally = run(main)
    assert abs(server.received - 500) <= 10
    latencies = sorted(latency for _, latency, _ in tally.records)
    # Sends meant for the stall's 200 ms waited for it to end: about 200 of them, late by up to
    # 200 ms, not just the 4 the busy connections had in flight (what a closed loop would see).
    assert sum(latency >= 50_000 for latency in latencies) >= 120
    assert 190_000 <= latencies[-1] < 260_000


def test_open_loop_sends_wait_for_an_idle_connection() -> None:
    async def main() -> tuple[Server, FakeTally]:
        server = await Server(always(Answer())).start()  # never answers
        tally = FakeTally()
        start = time.monotonic()
        await run_open(
            Target(server.url()), 3, Constant(1000, start), start + 0.2, tally, timeout=1
        )
        await server.stop()
        return server, tally

    server, tally = run(main)
    assert server.received == 3
    assert tally.records == [] and tally.errors == []


def test_open_loop_idle_connections_closed_by_the_server_are_replaced() -> None:
    async def main() -> tuple[Server, FakeTally]:
        server = await Server(always(Answer(HELLO, "close"))).start()
        tally = FakeTally()
        start = time.monotonic()
        # Sends 100 ms apart: each idle connection closes first. The last leaves 80 ms before
        # the end, time for its answer even on a busy machine (one in flight is not counted).
        schedule = Constant(10, start)
        await run_open(Target(server.url()), 2, schedule, start + 0.68, tally, timeout=1.0)
        await server.stop()
        return server, tally

    server, tally = run(main)
    assert tally.errors == []
    assert len(tally.records) == 7  # sends 0 to 6
    assert server.connections == 2 + 7  # each closed after its response, and replaced


def test_open_loop_a_response_to_no_request_is_a_read_error(
    warnings: Callable[[], list[str]],
) -> None:
    async def main() -> tuple[Server, FakeTally]:
        server = await Server(always(Answer(HELLO + HELLO))).start()
        tally = FakeTally()
        start = time.monotonic()
        await run_open(
            Target(server.url()), 1, Constant(20, start), start + 0.225, tally, timeout=1
        )
        await server.stop()
        return server, tally

    server, tally = run(main)
    assert len(tally.records) == len(tally.errors) == server.received == 5  # 0, 50... 200 ms
    assert set(tally.errors) == {"read"}
    assert warnings() == [f"127.0.0.1:{server.port} answered one request twice"]


# Rare turns, on a fake transport


class FakeTransport(asyncio.Transport):
    def __init__(self, fail_writes: bool = False) -> None:
        super().__init__()
        self.fail_writes = fail_writes
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))
        self.closing = self.fail_writes

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    def close(self) -> None:
        self.closing = True


def test_conn_a_failed_write() -> None:
    async def main() -> FakeTally:
        tally = FakeTally()
        run_ = _ClosedRun(Target("http://h/"), 1, time.monotonic() + 9, tally, 1.0, None)
        run_.holding = False  # past the warm-up
        conn = _Conn(run_)
        conn.connection_made(FakeTransport(fail_writes=True))
        conn.connection_lost(BrokenPipeError())
        return tally

    assert run(main).errors == ["write"]


def test_conn_nothing_counted_past_the_deadline_or_once_stopping() -> None:
    async def main() -> FakeTally:
        tally = FakeTally()
        run_ = _ClosedRun(Target("http://h/"), 1, time.monotonic() + 9, tally, 1.0, None)
        run_.holding = False  # past the warm-up
        late = _Conn(run_)
        late.connection_made(transport := FakeTransport())
        assert late.busy and transport.written == [b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]
        run_.deadline_ns = 0
        late.data_received(HELLO)  # the deadline passed before it came
        late.connection_lost(None)  # nor is a close then a failure
        until_eof = _Conn(run_)
        until_eof.connection_made(FakeTransport())
        until_eof.busy = True
        until_eof.data_received(UNTIL_EOF)
        until_eof.connection_lost(None)
        run_.stopping = True
        stopped = _Conn(run_)
        stopped.connection_made(transport := FakeTransport())
        assert transport.closing and transport.written == []
        return tally

    tally = run(main)
    assert tally.records == [] and tally.errors == []


def test_an_open_loop_sends_nothing_past_its_deadline_or_once_stopping() -> None:
    """Decided by the clock, not by which callback comes first at the end of a run."""

    class Always:
        start = 0.0

        def due(self, now: float) -> int:
            return 1_000

        def intended(self, k: int) -> float:
            return 0.0

    async def main() -> FakeTally:
        tally = FakeTally()
        run_ = _OpenRun(Target("http://h/"), 1, Always(), time.monotonic() + 9, tally, 1.0, None)
        run_.holding = False  # past the warm-up
        conn = _Conn(run_)
        conn.transport = transport = FakeTransport()  # type: ignore[assignment]
        run_.waiting.append(conn)
        run_.pump(run_.deadline_ns)  # at the deadline
        run_.stopping = True
        run_.pump(0)
        assert transport.written == [] and run_.sent == 0
        return tally

    assert run(main).records == []


# Client


def client_reply(n: int, request: bytes) -> Answer:
    method, path, _ = request.split(b" ", 2)
    if method == b"HEAD":
        return Answer(HELLO[: -len(b"hello")])
    answers = {
        b"/": Answer(HELLO),
        b"/chunked": Answer(CHUNKED),
        b"/until-eof": Answer(UNTIL_EOF, "close"),
        b"/closing": Answer(CLOSING, "close"),
        b"/slow": Answer(HELLO, after=0.3),
        b"/malformed": Answer(MALFORMED),
        b"/reset": Answer(b"", "reset"),
        b"/cut": Answer(HELLO[:-1], "close"),
        b"/double": Answer(HELLO + HELLO),
        b"/huge": Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 16777217\r\n\r\n"),
        b"/echo": Answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(request), request)
        ),
    }
    return answers[path]


async def client_server() -> tuple[Server, FakeTally, Client]:
    server = await Server(client_reply).start()
    tally = FakeTally()
    return server, tally, Client(Target(server.url(), headers=["X-All: 1"]), tally, timeout=0.1)


def test_client_requests_and_responses() -> None:
    async def main() -> tuple[Server, FakeTally, list[Response]]:
        server, tally, client = await client_server()
        responses = [
            await client.request(),
            await client.request("POST", "/echo", [("x-all", "2"), ("Host", "o")], b"body"),
            await client.request("HEAD", "/"),
            await client.request(path="/chunked"),
            await client.request(path="/closing"),
            await client.request(path="/until-eof"),
            await client.request(),
        ]
        await client.close()
        await client.close()
        await server.stop()
        return server, tally, responses

    server, tally, responses = run(main)
    first, echo, head, chunked, closing, until_eof, last = responses
    assert first == Response(200, [("Content-Length", "5")], b"hello") == last
    assert first.header("content-length") == "5" and first.header("date") is None
    assert (
        echo.body == b"POST /echo HTTP/1.1\r\nx-all: 2\r\nHost: o\r\nContent-Length: 4\r\n\r\nbody"
    )
    assert head == Response(200, [("Content-Length", "5")], b"")
    assert chunked.body == b"hello" and chunked.header("Transfer-Encoding") == "chunked"
    assert (closing.status, closing.body) == (503, b"busy")
    assert until_eof.body == b"until the close"
    assert server.connections == 3  # reconnected after each close
    assert tally.errors == []
    sizes = [len(HELLO), len(echo.body) + 39, 38, len(CHUNKED), len(CLOSING), len(UNTIL_EOF)]
    assert [(s, n) for s, _, n in tally.records] == list(
        zip([200, 200, 200, 200, 503, 200, 200], [*sizes, len(HELLO)], strict=True)
    )


def test_client_failures_are_counted_and_raised() -> None:
    async def main() -> tuple[FakeTally, list[str]]:
        server, tally, client = await client_server()
        raised = []
        for path in ("/slow", "/malformed", "/huge", "/reset", "/cut", "/"):
            try:
                await client.request(path=path)
            except RequestError as exc:
                raised.append(f"{exc.kind}: {exc}")
        await client.request(path="/double")  # the second response comes to no request
        assert (await client.request()).status == 200  # on a new connection
        refused = Client(Target(f"http://127.0.0.1:{closed_port()}/"), tally, timeout=1.0)
        with pytest.raises(RequestError, match=r"cannot connect to 127\.0\.0\.1:.*refused") as info:
            await refused.request()
        raised.append(info.value.kind)
        await client.close()
        await server.stop()
        return tally, raised

    tally, raised = run(main)
    assert raised == [
        "timeout: no response within 0.1 s",
        "read: bad response: malformed header line b'no colon'",
        "read: bad response: response body over 16777216 bytes (Content-Length)",
        "read: the connection closed before the response ([Errno 104] Connection reset by peer)",
        "read: the connection closed before the response (EOF)",
        "connect",
    ]
    assert tally.errors == ["timeout", *["read"] * 5, "connect"]  # "/double" is flagged
    assert len(tally.records) == 3


def test_client_one_request_at_a_time() -> None:
    async def main() -> None:
        server, _, client = await client_server()
        slow = asyncio.ensure_future(client.request(path="/slow"))
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="one request at a time"):
            await client.request()
        with pytest.raises(RequestError):
            await slow
        await server.stop()

    run(main)


def test_client_a_failed_write_and_the_deadline() -> None:
    async def main() -> FakeTally:
        server, tally, client = await client_server()
        late = Client(client.target, tally, timeout=0.5, deadline=time.monotonic() + 0.05)
        assert (await late.request(path="/slow")).status == 200  # answered late: unanswered
        with pytest.raises(asyncio.CancelledError, match="the run is over"):
            await late.request()  # not sent
        later = Client(client.target, tally, timeout=0.1, deadline=time.monotonic() + 0.05)
        with pytest.raises(RequestError, match=r"no response within 0\.1 s"):
            await later.request(path="/slow")  # timed out after the deadline: not counted
        await late.close()
        await later.close()
        await client.request()
        assert client._conn is not None
        client._conn.transport.abort()
        client._conn.connection_made(FakeTransport(fail_writes=True))
        with pytest.raises(RequestError, match=r"cannot send to 127\.0\.0\.1"):
            await client.request()
        await server.stop()
        return tally

    tally = run(main)
    assert len(tally.records) == 1
    assert tally.errors == ["write"]
    ((latency, sent),) = tally.unanswered_at_end  # its latency runs up to the deadline
    assert 40_000 <= latency <= 60_000 and sent


def test_client_a_request_cancelled_is_unanswered() -> None:
    async def main() -> tuple[Server, FakeTally]:
        server, tally, client = await client_server()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.request(path="/slow")
        assert (await client.request()).status == 200
        await server.stop()
        return server, tally

    server, tally = run(main)
    assert tally.errors == [] and len(tally.records) == 1
    ((latency, sent),) = tally.unanswered_at_end
    assert 45_000 <= latency < 200_000 and sent
    assert server.connections == 2


# run_scenario


def test_scenario_counts_every_request() -> None:
    async def scenario(client: Client) -> None:
        await client.request(path="/")
        await client.request(path="/chunked")

    async def main() -> tuple[Server, FakeTally]:
        server = await Server(client_reply).start()
        tally = FakeTally()
        await run_scenario(
            scenario, Target(server.url()), 4, time.monotonic() + 0.3, tally, timeout=1.0
        )
        await server.stop()
        return server, tally

    server, tally = run(main)
    assert tally.errors == []
    assert 100 < len(tally.records) <= server.answered <= len(tally.records) + 4
    assert server.connections == 4


@pytest.mark.parametrize(
    ("error", "kind"),
    [(ValueError("boom"), "read"), (TimeoutError("late"), "timeout")],
)
def test_scenario_exceptions_are_counted_and_logged_once(
    error: Exception, kind: str, warnings: Callable[[], list[str]]
) -> None:
    async def scenario(client: Client) -> None:
        await client.request()
        raise error

    async def main() -> FakeTally:
        server = await Server(client_reply).start()
        tally = FakeTally()
        await run_scenario(
            scenario, Target(server.url()), 2, time.monotonic() + 0.2, tally, timeout=1.0
        )
        await server.stop()
        return tally

    tally = run(main)
    assert set(tally.errors) == {kind}
    assert len(tally.records) - 2 <= len(tally.errors) <= len(tally.records)  # with backoff
    assert warnings() == [f"the scenario failed: {type(error).__name__}: {error}"]


def test_scenario_request_errors_are_counted_once() -> None:
    async def scenario(client: Client) -> None:
        await client.request()

    async def main() -> FakeTally:
        tally = FakeTally()
        target = Target(f"http://127.0.0.1:{closed_port()}/")
        await run_scenario(scenario, target, 2, time.monotonic() + 0.2, tally, timeout=1.0)
        return tally

    tally = run(main)
    assert set(tally.errors) == {"connect"}
    assert 4 <= len(tally.errors) <= 14


def test_scenario_that_never_waits_ends_at_the_deadline() -> None:
    calls = [0]

    async def scenario(client: Client) -> None:
        calls[0] += 1

    async def main() -> None:
        await run_scenario(
            scenario, Target("http://h/"), 1, time.monotonic() + 0.05, FakeTally(), timeout=1
        )
        with pytest.raises(ValueError, match="need connections >= 1"):
            await run_scenario(scenario, Target("http://h/"), 0, 0, FakeTally(), timeout=1)

    run(main)
    assert calls[0] > 100


def test_a_timed_block_is_recorded_as_one_request() -> None:
    """What the client does not speak (a WebSocket round trip) is timed the same way."""

    async def main() -> FakeTally:
        tally = FakeTally()
        client = Client(Target("http://h/"), tally, timeout=1.0)
        async with client.timed():
            # At least 10 ms by the clock the client reads (uvloop's timers may fire up to a
            # millisecond early: a plain sleep(0.01) is not enough).
            until = time.monotonic() + 0.01
            while time.monotonic() < until:
                await asyncio.sleep(0.001)
        async with client.timed(status=101):
            pass
        with pytest.raises(RequestError) as failed:
            async with client.timed():
                raise TimeoutError("no pong")
        assert failed.value.kind == "timeout"
        with pytest.raises(RequestError, match="ValueError: bad frame"):
            async with client.timed():
                raise ValueError("bad frame")
        with pytest.raises(RequestError, match="counted already"):
            async with client.timed():
                raise RequestError("read", "counted already")
        late = Client(Target("http://h/"), tally, timeout=1.0, deadline=0.0)
        async with late.timed():  # after the run's end: not counted
            pass
        with pytest.raises(RequestError):
            async with late.timed():
                raise ValueError("late")
        return tally

    tally = run(main)
    assert [(status, nbytes) for status, _, nbytes in tally.records] == [(200, 0), (101, 0)]
    assert tally.records[0][1] >= 10_000  # microseconds
    assert tally.errors == ["timeout", "read"]


def test_the_sweep_fails_only_requests_in_flight_past_the_timeout() -> None:
    """Event by event (no server): an idle connection and one whose failure is counted are
    left alone; one in flight past the timeout fails; the sweep wakes when the youngest in
    flight would time out."""
    loop = uvloop.new_event_loop()
    try:
        sweep = _ClosedRun(Target("http://127.0.0.1:9/"), 1, 0.0, FakeTally(), 1.0, loop)
        failed: list[str] = []

        class Failing(_Conn):
            def fail(self, kind: str, why: str | None = None) -> None:
                failed.append(kind)

        idle, done, late, young = (Failing(sweep) for _ in range(4))
        now = time.monotonic_ns()
        done.busy = done.failed = late.busy = young.busy = True
        late.sent_ns, young.sent_ns = now - 2_000_000_000, now - 500_000_000
        sweep.live = {idle, done, late, young}
        sweep._sweep()
        assert failed == ["timeout"]
        assert 0.4 < sweep._sweeper.when() - loop.time() <= 0.51
        sweep._sweeper.cancel()
    finally:
        loop.close()

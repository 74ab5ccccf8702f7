"""Hostile and unusual clients on a fake transport: a pipelining client that never reads,
half-closes, clients that leave while the app waits, strict heads and trailers, and what goes
on the wire when the app misbehaves (the "Hardening" issue, one section per item)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from _http_fakes import SPLITS, START, Harness, echo_app, gated_hello, hello_app, request, run

from prefork.http import ClientDisconnected
from prefork.http._state import Phase

BIG = b"b" * 100_000


async def big_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(START)
    await send({"type": "http.response.body", "body": BIG})


# -- 1. a pipelining client that never reads ---------------------------------------------------


def test_a_client_that_never_reads_gets_no_further_responses_nor_reads() -> None:
    async def main() -> None:
        started: list[str] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            started.append(scope["path"])
            await big_app(scope, receive, send)

        h = Harness(app, high_water=65536)
        h.feed(b"".join(request("GET", f"/{i}") for i in range(50)))
        await h.settle()
        # one 100 KB response went past the high-water mark: nothing else is started, and
        # nothing more is read, until the client reads it
        assert started == ["/0"] and len(h.transport.writes) == 1
        assert h.proto.phase is Phase.FLUSH and not h.transport.reading
        h.proto.data_received(request() * 10)  # what a transport had already read
        assert started == ["/0"]
        for n in range(2, 6):
            h.transport.client_reads()
            await h.settle()
            assert len(started) == len(h.transport.writes) == n
        assert h.transport.buffered <= 65536 + len(BIG) + 1000

    run(main())


def test_reading_resumes_once_the_client_read_and_nothing_is_pipelined() -> None:
    async def main() -> None:
        h = Harness(big_app, {"keep_alive": 7.0}, high_water=65536)
        h.feed(request())
        await h.settle()
        assert h.proto.phase is Phase.FLUSH and h.proto.deadline == 0.0
        assert h.proto.write_deadline > 0
        h.transport.client_reads()
        assert h.proto.phase is Phase.IDLE and h.transport.reading
        assert h.proto.write_deadline == 0.0 and h.proto.deadline > h.loop.time() + 6

    run(main())


def test_a_client_that_never_reads_is_aborted_after_the_body_timeout_in_flush() -> None:
    async def main() -> None:
        h = Harness(big_app, {"body_timeout": 10.0}, high_water=65536)
        h.feed(request() * 3)
        await h.settle()
        h.state.sweep(h.loop.time() + 11)
        assert h.transport.aborted
        await h.settle()
        assert not h.state.connections and h.out.count(b"HTTP/1.1 200") == 1

    run(main())


def test_a_fin_while_flushing_answers_what_was_read_once_the_client_reads() -> None:
    async def main() -> None:
        h = Harness(big_app, high_water=65536)
        h.feed(request() * 2)
        await h.settle()
        h.eof()  # a FIN is only seen while reading; a transport may have it in hand
        assert not h.transport.closed
        h.transport.client_reads()
        await h.settle()
        h.transport.client_reads()
        await h.settle()
        assert h.out.count(b"HTTP/1.1 200") == 2 and h.transport.closed

    run(main())


# -- 3 and 11. end of input: half-closed clients and clients that are gone --------------------


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("when", ["with the data", "after the first answer"])
def test_pipelined_requests_are_all_answered_before_a_half_close(how: str, when: str) -> None:
    async def main() -> None:
        gate, app = gated_hello()
        h = Harness(app)
        h.feed(request("GET", "/1") + request("POST", "/2", "Content-Length: 2", body=b"ab"), how)
        h.feed(request("GET", "/3"), how)
        if when == "with the data":
            h.eof()
        gate.set()
        await h.until(lambda: h.out.count(b"HTTP/1.1 200") >= 1)
        if when != "with the data":
            h.eof()
        await h.settle()
        assert [r.status for r in h.responses("GET", "POST", "GET")] == [200, 200, 200]
        assert h.transport.closed

    run(main())


def test_a_fin_with_only_part_of_a_head_closes_at_once() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(b"GET / HTTP/1.1\r\nHo")
        h.eof()
        await h.settle()
        assert h.transport.closed and h.out == b""

        h2 = Harness(hello_app)
        h2.feed(request() + b"GET / HT")  # a whole request, then part of one
        h2.eof()
        await h2.settle()
        assert h2.out.count(b"HTTP/1.1 200") == 1 and h2.transport.closed

        h3 = Harness(hello_app)  # nothing read at all
        h3.eof()
        assert h3.transport.closed

    run(main())


def test_a_fin_before_a_pipelined_body_is_whole_closes_after_the_answers_before_it() -> None:
    async def main() -> None:
        started: list[str] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            started.append(scope["path"])
            await echo_app()(scope, receive, send)

        h = Harness(app)
        h.feed(request("GET", "/1") + request("POST", "/2", "Content-Length: 5", body=b"ab"))
        h.eof()
        await h.settle()
        assert h.out.count(b"HTTP/1.1 200") == 1 and h.transport.closed
        assert started == ["/1"]

    run(main())


def test_a_fin_during_a_body_closes_and_the_app_sees_disconnect() -> None:
    async def main() -> None:
        messages: list[dict[str, Any]] = []
        h = Harness(echo_app(messages))
        h.feed(request("POST", "/", "Content-Length: 5", body=b"ab"))
        await h.until(lambda: len(messages) == 1)
        h.eof()
        await h.settle()
        assert messages[-1] == {"type": "http.disconnect"} and h.transport.closed

    run(main())


def long_poll(events: list[Any], answer: bool = False) -> Any:
    """Reads the request, then waits on receive() for the client to leave (or answers)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        events.append(await receive())
        message = await receive()
        events.append(message)
        if answer:
            await send(START)
            await send({"type": "http.response.body", "body": b"bye"})

    return app


def test_an_app_waiting_on_receive_hears_at_once_that_the_client_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        events: list[Any] = []
        h = Harness(long_poll(events))
        h.feed(request())
        await h.until(lambda: len(events) == 1)
        await h.settle_loop()
        assert len(events) == 1  # waiting
        h.eof()
        await h.settle()
        assert events[1] == {"type": "http.disconnect"}
        # it returned without answering: no 500 to a client that left, just the close
        assert h.out == b"" and h.transport.closed and not h.state.tasks

    caplog.set_level(logging.DEBUG, logger="prefork.http")
    run(main())
    assert [r.levelno for r in caplog.records if r.name == "prefork.http"] == [logging.DEBUG]


def test_a_half_closed_client_told_of_the_disconnect_still_gets_an_answer() -> None:
    async def main() -> None:
        events: list[Any] = []
        h = Harness(long_poll(events, answer=True))
        h.feed(request())
        await h.until(lambda: len(events) == 1)
        h.eof()
        await h.settle()
        assert events[1] == {"type": "http.disconnect"}
        assert h.responses("GET")[0].body == b"bye" and h.transport.closed

    run(main())


def test_a_half_closed_client_gets_its_unread_body_before_the_disconnect() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        events: list[Any] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await gate.wait()
            await long_poll(events, answer=True)(scope, receive, send)

        h = Harness(app)
        h.feed(request("POST", "/", "Content-Length: 2", body=b"ab"))
        h.eof()
        gate.set()
        await h.settle()
        assert events == [
            {"type": "http.request", "body": b"ab", "more_body": False},
            {"type": "http.disconnect"},
        ]
        assert h.responses("POST")[0].body == b"bye"

    run(main())


def test_with_requests_pipelined_behind_only_the_last_app_is_told_of_the_fin() -> None:
    async def main() -> None:
        heard: dict[str, asyncio.Future[Any]] = {}
        gates = {"/1": asyncio.Event(), "/2": asyncio.Event(), "/3": asyncio.Event()}

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            path = scope["path"]
            await receive()
            heard[path] = asyncio.ensure_future(receive())
            await gates[path].wait()
            await hello_app(scope, receive, send)

        h = Harness(app)
        h.feed(request("GET", "/1") + request("GET", "/2") + request("GET", "/3"))
        h.eof()
        await h.settle_loop()
        assert not heard["/1"].done()  # the client waits for three answers
        gates["/1"].set()
        gates["/2"].set()
        await h.until(lambda: "/3" in heard)
        await h.settle_loop()
        assert heard["/3"].done() and heard["/3"].result() == {"type": "http.disconnect"}
        assert heard["/2"].result() == {"type": "http.disconnect"}  # its response was sent
        gates["/3"].set()
        await h.settle()
        assert h.out.count(b"HTTP/1.1 200") == 3 and h.transport.closed

    run(main())


# -- 12. send() on a reset connection -----------------------------------------------------


def test_send_raises_once_a_write_found_the_connection_reset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        outcome: list[Any] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send(START)
            h.transport.reset_on_write = True  # the client resets: the next write fails
            try:
                for _ in range(100):  # never yields: connection_lost cannot run meanwhile
                    await send({"type": "http.response.body", "body": b"x", "more_body": True})
                    outcome.append("sent")
            except ClientDisconnected as exc:
                outcome.append(exc)

        h = Harness(app)
        h.feed(request())
        await h.settle()
        assert outcome[:-1] == ["sent"] and isinstance(outcome[-1], ClientDisconnected)
        assert h.transport.dropped == 1 and not h.state.connections

    caplog.set_level(logging.DEBUG, logger="prefork.http")
    run(main())
    assert [r.levelno for r in caplog.records if r.name == "prefork.http"] == [logging.DEBUG]


def test_an_app_that_lets_the_reset_error_out_is_not_logged_as_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send(START)
            h.transport.reset_on_write = True
            for _ in range(100):
                await send({"type": "http.response.body", "body": b"x", "more_body": True})

        h = Harness(app)
        h.feed(request())
        await h.settle()
        assert h.transport.dropped == 1 and not h.state.connections

    caplog.set_level(logging.DEBUG, logger="prefork.http")
    run(main())
    assert [r.levelno for r in caplog.records if r.name == "prefork.http"] == [logging.DEBUG]


# -- 13, 14, 15. what goes on the wire -----------------------------------------------------


async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise RuntimeError("on purpose")


@pytest.mark.parametrize(
    ("app", "options", "raw", "status"),
    [
        (failing, {}, request("HEAD"), 500),
        (
            hello_app,
            {"limit_request_body": 1},
            request("HEAD", "/", "Content-Length: 5", body=b"abcde"),
            413,
        ),
        (hello_app, {}, request("HEAD", "/", "X: a\x01"), 400),
        (hello_app, {}, b"HEAD /" + b"a" * 9000, 414),
    ],
)
def test_no_answer_to_head_has_a_body_whoever_made_it(
    app: Any, options: dict[str, Any], raw: bytes, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        h = Harness(app, options)
        h.feed(raw + request())
        await h.settle()
        head, _, body = h.out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status) and b"content-length: " in head
        assert body == b"" and h.transport.closed

    run(main())


def test_a_head_request_timing_out_gets_a_408_without_body() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"header_timeout": 1.0})
        h.feed(b"HEAD / HTTP/1.1\r\nHo")
        h.state.sweep(h.loop.time() + 2)
        assert h.out.startswith(b"HTTP/1.1 408 ") and h.out.endswith(b"\r\n\r\n")

    run(main())


@pytest.mark.parametrize("status", [600, 999, 99])
def test_only_statuses_100_to_599_go_out(status: int, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send({**START, "status": status})
            await send({"type": "http.response.body", "body": b"odd"})

        h = Harness(app)
        h.feed(request())
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 500 ") and b"odd" not in h.out

    run(main())
    assert "response status must be an int in 100..599" in caplog.text


def test_receive_after_the_response_gives_http_disconnect_at_once() -> None:
    async def main() -> None:
        got: list[Any] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await hello_app(scope, receive, send)  # without reading the request first
            got.append(await receive())

        h = Harness(app)
        h.feed(request("POST", "/", "Content-Length: 3", body=b"abc") + request())
        await h.settle()
        assert got == [{"type": "http.disconnect"}] * 2
        assert h.out.count(b"HTTP/1.1 200") == 2 and not h.transport.closed

    run(main())


# -- 4, 6, 10. heads and trailers: limits whatever the split, linear cost, strict syntax ----


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    "raw",
    [
        request("GET", "/", "X-Big: " + "a" * 9000) + b"X-Partial: abc",
        request("GET", "/", "X-Big: " + "a" * 9000)[:-2] + b"X-Partial: abc",
        b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Pad: " + b"p" * 8000 + b"\r\n" * 1 + b"A: 1",
    ],
)
def test_a_long_field_is_431_at_once_however_the_head_is_split(raw: bytes, how: str) -> None:
    async def main() -> None:
        h = Harness(hello_app, {"limit_request_field_size": 7000})
        h.feed(raw, how, seed=2)
        assert h.out.startswith(b"HTTP/1.1 431 ") and h.transport.closed

    run(main())


def head_of(size: int) -> bytes:
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 4000) for i in range(size // 4000))
    return b"GET / HTTP/1.1\r\nHost: t\r\n" + fields


def cpu_for_bytewise_head(size: int) -> float:
    async def main() -> float:
        h = Harness(hello_app)
        head = head_of(size)
        began = time.process_time()
        for i in range(len(head)):
            h.proto.data_received(head[i : i + 1])
        used = time.process_time() - began
        h.feed(b"\r\n")
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 200 ")
        return used

    return min(run(main()) for _ in range(2))


def test_a_head_sent_byte_by_byte_costs_in_proportion_to_its_size() -> None:
    small, large = cpu_for_bytewise_head(8_000), cpu_for_bytewise_head(64_000)
    # linear: 8 times the bytes cost about 8 times as much; the old rescans cost 30 times
    assert large < 16 * small, (small, large)


def test_a_partial_head_grows_in_place_and_is_searched_once() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        head = head_of(20_000)
        h.proto.data_received(head[:1])
        h.proto.data_received(head[1:2])
        reader = h.proto._reader
        buf, lines = reader.buf, reader._lines
        assert isinstance(buf, bytearray) and lines is not None
        for i in range(2, len(head)):
            h.proto.data_received(head[i : i + 1])
            assert reader.buf is buf and lines._scan == len(buf)

    run(main())


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n\tb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: t\n\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x7fb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", 400),
        (
            request("POST", "/", "Transfer-Encoding: chunked")
            + b"0\r\n"
            + b"".join(b"T%d: %s\r\n" % (i, b"t" * 7000) for i in range(10))
            + b"\r\n",
            431,
        ),
        (
            request("POST", "/", "Transfer-Encoding: chunked")
            + b"0\r\n"
            + b"".join(b"T%d: t\r\n" % i for i in range(500))
            + b"\r\n",
            431,
        ),
        (request("POST", "/", "Transfer-Encoding: chunked") + b"0\r\nT: a\r\n b\r\n\r\n", 400),
    ],
)
def test_lenient_syntax_is_refused_in_heads_and_trailers(raw: bytes, status: int, how: str) -> None:
    async def main() -> None:
        messages: list[dict[str, Any]] = []
        h = Harness(echo_app(messages))
        h.feed(raw + request(), how, seed=9)
        await h.settle()
        [r] = h.responses("GET")
        assert r.status == status and h.transport.closed and h.out.count(b"HTTP/1.1 ") == 1
        assert not any(m.get("more_body") is False for m in messages)

    run(main())


def test_trailers_within_the_limits_pass() -> None:
    async def main() -> None:
        h = Harness(echo_app())
        trailer = b"".join(b"T%d: t\r\n" % i for i in range(100))
        body = b"3\r\nabc\r\n0\r\n" + trailer + b"\r\n"
        h.feed(request("POST", "/", "Transfer-Encoding: chunked", body=body) + request())
        await h.settle()
        assert [r.body for r in h.responses("POST", "GET")] == [b"abc", b""]

    run(main())


# -- proxy headers from a unix socket ----------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "client"), [("127.0.0.1", None), ("unix", ("1.2.3.4", 0)), ("*", ("1.2.3.4", 0))]
)
def test_a_unix_socket_peer_is_trusted_only_when_allowed(allow: str, client: Any) -> None:
    async def main() -> None:
        scopes: list[dict[str, Any]] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            scopes.append(scope)
            await hello_app(scope, receive, send)

        options = {"proxy_headers": True, "forwarded_allow_ips": allow}
        h = Harness(app, options, sockname="/tmp/s.sock", peername="")
        h.feed(request("GET", "/", "X-Forwarded-For: 1.2.3.4", "X-Forwarded-Proto: https"))
        await h.settle()
        assert scopes[0]["client"] == client
        assert scopes[0]["scheme"] == ("http" if client is None else "https")

    run(main())


def test_a_drain_leaves_a_connection_flushing_its_last_response_to_its_write_deadline() -> None:
    async def main() -> None:
        h = Harness(big_app, high_water=65536)
        h.feed(request())
        await h.settle()
        assert h.proto.phase is Phase.FLUSH and h.proto.cycle is None
        h.proto.start_drain(until=h.loop.time() + 1.0)
        assert h.proto.draining and h.proto.deadline == 0.0  # only write_deadline bounds it
        assert h.proto.write_deadline > h.loop.time() + 1.0

    run(main())


def test_a_head_in_tiny_pieces_is_read_in_gathered_steps() -> None:
    """Each read costs a system call: a tiny read that leaves a head incomplete pauses
    reading a moment so that the kernel gathers more; a whole head never waits."""

    async def main() -> None:
        h = Harness(hello_app)
        h.feed(b"GET / HT")
        assert not h.transport.reading  # paused: the kernel gathers the next bytes
        await asyncio.sleep(0.02)
        assert h.transport.reading
        h.feed(b"TP/1.1\r\nHost: t\r\n\r\n")  # the rest completes the head: no pause
        await h.settle()
        assert h.transport.reading and h.responses("GET")[0].status == 200
        h.feed(b"GE")  # an idle keep-alive connection gathers too
        assert not h.transport.reading
        h.proto._close()
        await asyncio.sleep(0.02)  # the timer finds the connection closed: nothing to do
        assert not h.transport.reading

    run(main())

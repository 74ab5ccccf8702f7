"""The ASGI side on a fake transport: app errors, message order, scope, timeouts, drain."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
from _http_fakes import START, Harness, echo_app, gated_hello, hello_app, request, run

from prefork.http._connection import BODY_BUFFER
from prefork.http._state import Phase

BODY = {"type": "http.response.body", "body": b"ok"}


def script(*steps: Any, ret: Any = None, raise_: BaseException | None = None) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        for step in steps:
            await send(step)
        if raise_ is not None:
            raise raise_
        return ret

    return app


@pytest.mark.parametrize(
    ("app", "expect_500", "log"),
    [
        (script(raise_=ValueError("boom")), True, "Exception in ASGI application"),
        (script(START, raise_=ValueError("boom")), True, "Exception in ASGI application"),
        (script(), True, "without starting a response"),
        (script(START), True, "without completing the response"),
        (script(BODY), True, "Expected ASGI message 'http.response.start'"),
        (script(START, START), True, "sent twice"),
        (script({"type": "http.nonsense"}), True, "Unexpected ASGI message type"),
        (script(START, {**BODY, "body": "str"}), True, "must be bytes"),
        (script({**START, "headers": [(b"x", b"a\r\nb")]}, BODY), True, "invalid response"),
        (script({**START, "headers": [(b"x y", b"a")]}, BODY), True, "invalid response"),
        (script({**START, "headers": [(1, b"a")]}, BODY), True, "must be bytes"),
        (script({**START, "status": 103}, BODY), True, "1xx"),
        (script({**START, "status": "200"}, BODY), True, "status must be an int"),
        (script({**START, "headers": [(b"content-length", b"1")]}, BODY), True, "longer"),
        (script({**START, "headers": [(b"content-length", b"x")]}, BODY), True, "invalid"),
        (script({**START, "headers": [(b"content-length", b"3")]}, BODY), True, "shorter"),
        (
            script(START, {**BODY, "more_body": True}, raise_=ValueError("late")),
            False,
            "Exception in ASGI application",
        ),
        (script(START, {**BODY, "more_body": True}), False, "without completing"),
    ],
)
def test_app_errors_give_500_if_nothing_was_sent_else_close(
    app: Any, expect_500: bool, log: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        h = Harness(app)
        h.feed(request() + request())
        await h.settle()
        assert h.transport.closed
        if expect_500:
            assert h.out.startswith(b"HTTP/1.1 500 ") and h.out.count(b"HTTP/1.1") == 1
        else:
            assert h.out.startswith(b"HTTP/1.1 200 ") and b"500" not in h.out
        assert log in caplog.text

    run(main())


def test_injection_attempt_writes_nothing_of_the_header() -> None:
    async def main() -> None:
        h = Harness(script({**START, "headers": [(b"x", b"a\r\nSet-Cookie: evil")]}, BODY))
        h.feed(request())
        await h.settle()
        assert b"evil" not in h.out

    run(main())


def test_messages_after_the_end_raise_but_keep_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        h = Harness(script(START, BODY, BODY))
        h.feed(request())
        await h.settle()
        assert h.responses("GET")[0].body == b"ok"
        assert "after the end" in caplog.text

    run(main())


def test_non_none_return_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        h = Harness(script(START, BODY, ret=42))
        h.feed(request())
        await h.settle()
        assert h.responses("GET")[0].status == 200
        assert "should return None" in caplog.text

    run(main())


def test_response_headers_may_be_an_iterator_of_lists_and_str() -> None:
    async def main() -> None:
        headers = iter([[b"X-A", b"\tv\xe9 1"], ["x-b", "2"], (b"date", b"then")])
        h = Harness(script({**START, "headers": headers}, {**BODY, "body": bytearray(b"ok")}))
        h.feed(request())
        await h.settle()
        r = h.responses("GET")[0]
        assert r.header(b"x-a") == b"v\xe9 1" and r.header(b"x-b") == b"2"
        assert r.header(b"date") == b"then" and r.body == b"ok"

    run(main())


def test_big_single_body_is_written_once_with_its_head() -> None:
    async def main() -> None:
        big = b"z" * 100_000
        h = Harness(script(START, {**BODY, "body": memoryview(big)}))
        h.feed(request())
        await h.settle()
        assert h.responses("GET")[0].body == big and len(h.transport.writes) == 1

    run(main())


async def _scope_of(h: Harness, raw: bytes) -> dict[str, Any]:
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        await hello_app(scope, receive, send)

    h.state.app = app
    h.feed(raw)
    await h.settle()
    return scopes[0]


def test_scope_follows_the_asgi_spec() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"root_path": "/api"})
        h.state.lifespan_state["db"] = "conn"
        scope = await _scope_of(h, request("GET", "/a%20b/c%2Fd?x=1&y=%20", "X-Upper: V"))
        assert scope["type"] == "http"
        assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
        assert scope["http_version"] == "1.1" and scope["method"] == "GET"
        assert scope["scheme"] == "http"
        assert scope["path"] == "/api/a b/c/d"
        assert scope["raw_path"] == b"/api/a%20b/c%2Fd"
        assert scope["query_string"] == b"x=1&y=%20"
        assert scope["root_path"] == "/api"
        assert scope["headers"] == [(b"host", b"t"), (b"x-upper", b"V")]
        assert scope["client"] == ("127.0.0.1", 50000)
        assert scope["server"] == ("127.0.0.1", 8000)
        assert scope["state"] == {"db": "conn"}
        assert scope["state"] is not h.state.lifespan_state

    run(main())


def test_unix_socket_scope_has_path_server_and_no_client() -> None:
    async def main() -> None:
        h = Harness(hello_app, sockname="/tmp/s.sock", peername="")
        scope = await _scope_of(h, request())
        assert scope["server"] == ("/tmp/s.sock", None) and scope["client"] is None

    run(main())


@pytest.mark.parametrize(
    ("options", "peer", "headers", "client", "scheme"),
    [
        ({}, "127.0.0.1", ["X-Forwarded-For: 1.2.3.4"], ("127.0.0.1", 50000), "http"),
        (
            {"proxy_headers": True},
            "127.0.0.1",
            ["X-Forwarded-For: 9.9.9.9, 1.2.3.4", "X-Forwarded-Proto: https"],
            ("1.2.3.4", 0),
            "https",
        ),
        (
            {"proxy_headers": True},
            "10.0.0.5",
            ["X-Forwarded-For: 1.2.3.4", "X-Forwarded-Proto: https"],
            ("10.0.0.5", 50000),
            "http",
        ),
        (
            {"proxy_headers": True, "forwarded_allow_ips": ("10.0.0.0/8", "127.0.0.1")},
            "10.0.0.5",
            ["X-Forwarded-For: 1.2.3.4, 10.1.1.1", "X-Forwarded-Proto: gopher"],
            ("1.2.3.4", 0),
            "http",
        ),
        (
            {"proxy_headers": True, "forwarded_allow_ips": ("*",)},
            "10.0.0.5",
            ["X-Forwarded-For: 127.0.0.1, 10.1.1.1"],
            ("127.0.0.1", 0),
            "http",
        ),
    ],
)
def test_proxy_headers_only_from_trusted_peers(
    options: dict[str, Any], peer: str, headers: list[str], client: Any, scheme: str
) -> None:
    async def main() -> None:
        h = Harness(hello_app, options, peername=(peer, 50000))
        scope = await _scope_of(h, request("GET", "/", *headers))
        assert scope["client"] == client and scope["scheme"] == scheme

    run(main())


def test_limit_concurrency_answers_503_and_closes() -> None:
    async def main() -> None:
        gate, app = gated_hello()
        h = Harness(app, {"limit_concurrency": 1})
        h.feed(request())
        other = h.connect()
        other.data_received(request())
        await asyncio.sleep(0)
        out = bytes(other.transport.out)  # type: ignore[attr-defined]
        assert out.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"connection: close" in out and other.transport.closed  # type: ignore[attr-defined]
        gate.set()
        await h.settle()
        assert h.responses("GET")[0].status == 200

    run(main())


def test_max_requests_retires_once_and_keeps_serving() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"max_requests": 2, "max_requests_jitter": 0})
        h.feed(request() * 5)
        await h.settle()
        assert h.retired == 1 and len(h.responses(*["GET"] * 5)) == 5

    run(main())


def test_access_log_only_when_enabled(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        caplog.set_level(logging.INFO, logger="prefork.access")
        h = Harness(hello_app, {"access_log": True})
        h.feed(request("GET", "/p?q=1"))
        await h.settle()
        h2 = Harness(hello_app, {}, sockname="/s", peername=None)
        h2.feed(request("GET", "/off"))
        await h2.settle()

    run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "prefork.access"]
    assert len(lines) == 1
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[.+\] "GET /p\?q=1 HTTP/1\.1" 200 5 \d+\.\d{6}', lines[0]
    )


def test_access_log_for_unix_client(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        caplog.set_level(logging.INFO, logger="prefork.access")
        h = Harness(hello_app, {"access_log": True}, sockname="/s", peername=None)
        h.feed(request())
        await h.settle()

    run(main())
    assert re.search(r'- - - \[.+\] "GET / HTTP/1\.1" 200 5 ', caplog.text)


# -- timeouts -----------------------------------------------------------------------------


def test_each_phase_arms_the_timeout_of_its_table_entry() -> None:
    async def main() -> None:
        gate, app = gated_hello()
        h = Harness(app, {"keep_alive": 1.0, "header_timeout": 2.0, "body_timeout": 3.0})
        assert [h.state.timeouts[phase] for phase in Phase] == [1.0, 2.0, 3.0, 0.0, 3.0, 0.0, 0.0]

        def armed() -> tuple[Phase, int]:
            deadline = h.proto.deadline
            return h.proto.phase, round(deadline - h.loop.time()) if deadline else 0

        assert armed() == (Phase.HEAD, 2)  # a fresh connection
        h.feed(request("POST", "/", "Content-Length: 4", body=b"ab"))
        assert armed() == (Phase.BODY, 3)
        h.feed(b"cd")
        assert armed() == (Phase.BUSY, 0)  # the app's time is its own
        gate.set()
        await h.settle()
        assert armed() == (Phase.IDLE, 1)
        h.feed(request("POST", "/", "Content-Length: 4", body=b"ab"))
        await h.settle()  # answered without reading the body
        assert armed() == (Phase.DISCARD, 3)
        h.feed(b"cd" + request()[:5])
        assert armed() == (Phase.HEAD, 2)  # pipelined bytes wait: a head is due
        await h.settle()
        h.proto.connection_lost(None)
        assert armed() == (Phase.CLOSED, 0)

    run(main())


def test_a_head_begun_on_an_idle_connection_keeps_the_keep_alive_deadline() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"keep_alive": 1.0, "header_timeout": 30.0})
        h.feed(request())
        await h.settle()
        now = h.loop.time()
        h.feed(b"GET / HT")
        h.state.sweep(now + 0.5)
        assert not h.transport.closed
        h.state.sweep(now + 1.5)
        assert h.out.count(b"HTTP/1.1 408 ") == 1 and h.transport.closed

    run(main())


def test_header_timeout_from_accept_closes_silently_when_nothing_came() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"header_timeout": 2.0})
        now = h.loop.time()
        h.state.sweep(now + 1.0)
        assert not h.transport.closed
        h.state.sweep(now + 2.5)
        assert h.transport.closed and h.out == b""

    run(main())


def test_half_sent_head_gets_408() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"header_timeout": 2.0})
        h.feed(b"GET / HTTP/1.1\r\nHost")
        h.state.sweep(h.loop.time() + 3)
        assert h.out.startswith(b"HTTP/1.1 408 ") and h.transport.closed

    run(main())


def test_keep_alive_timeout_after_a_response() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"keep_alive": 1.0, "header_timeout": 30.0})
        h.feed(request())
        await h.settle()
        now = h.loop.time()
        h.state.sweep(now + 0.5)
        assert not h.transport.closed
        h.state.sweep(now + 1.5)
        assert h.transport.closed

    run(main())


def test_no_timeout_while_the_app_runs() -> None:
    async def main() -> None:
        gate, app = gated_hello()
        h = Harness(app, {"keep_alive": 1.0, "header_timeout": 1.0})
        h.feed(request())
        h.state.sweep(h.loop.time() + 100)
        assert not h.transport.closed
        gate.set()
        await h.settle()

    run(main())


def test_body_idle_timeout_closes_and_the_app_sees_disconnect() -> None:
    async def main() -> None:
        got: list[Any] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            got.append(await receive())
            got.append(await receive())

        h = Harness(app, {"body_timeout": 1.0})
        h.feed(request("POST", "/", "Content-Length: 10", body=b"abc"))
        await h.until(lambda: len(got) == 1)
        h.state.sweep(h.loop.time() + 0.5)
        assert not h.transport.closed
        h.state.sweep(h.loop.time() + 2)
        await h.settle()
        assert got == [
            {"type": "http.request", "body": b"abc", "more_body": True},
            {"type": "http.disconnect"},
        ]
        assert h.transport.closed

    run(main())


def test_sweeper_runs_on_its_own() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"header_timeout": 0.05, "keep_alive": 0.05})
        assert h.state.sweep_interval == pytest.approx(0.0125)
        h.state.start_sweeping()
        await h.until(lambda: h.transport.closed)
        h.state.stop_sweeping()
        h.state.stop_sweeping()

    run(main())


# -- body errors, half-close, write flow control --------------------------------------------


def test_bad_chunk_before_the_response_is_400() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(request("POST", "/", "Transfer-Encoding: chunked", body=b"zz\r\n"))
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 400 ") and h.transport.closed

    run(main())


def test_bad_chunk_while_discarding_just_closes() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(request("POST", "/", "Transfer-Encoding: chunked"))
        await h.settle()
        h.feed(b"zz\r\n")
        await h.settle()
        assert h.out.count(b"HTTP/1.1") == 1 and h.transport.closed

    run(main())


def test_half_closed_client_still_gets_its_answer() -> None:
    async def main() -> None:
        gate, app = gated_hello()
        h = Harness(app)
        h.feed(request())
        assert h.proto.eof_received() is True
        gate.set()
        await h.settle()
        assert h.responses("GET")[0].body == b"hello" and h.transport.closed

        idle = h.connect()
        assert idle.eof_received() is None

    run(main())


def test_send_waits_while_writing_is_paused() -> None:
    async def main() -> None:
        progress: list[int] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send(START)
            for i in range(3):
                await send({**BODY, "more_body": True})
                progress.append(i)
            await send({**BODY, "body": b""})

        h = Harness(app)
        h.proto.pause_writing()
        h.feed(request())
        await h.until(lambda: h.out != b"")
        for _ in range(5):
            await asyncio.sleep(0)
        assert progress == []
        h.proto.resume_writing()
        h.proto.resume_writing()  # a second resume is harmless
        await h.settle()
        assert progress == [0, 1, 2]
        assert h.responses("GET")[0].body == b"okokok"

    run(main())


def test_disconnect_while_waiting_to_write_raises_from_the_waiting_send() -> None:
    async def main() -> None:
        errors: list[BaseException] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send(START)
            try:
                await send({**BODY, "more_body": True})  # waits: writing is paused
            except OSError as exc:
                errors.append(exc)

        h = Harness(app)
        h.proto.pause_writing()
        h.feed(request())
        await h.until(lambda: h.proto.flow._waiter is not None)
        h.proto.connection_lost(None)
        await h.settle()
        assert len(errors) == 1
        await h.proto.flow.drain()  # nothing to wait for once closed

    run(main())


def test_pipelined_backlog_pauses_reading() -> None:
    async def main() -> None:
        gate, app = gated_hello()
        h = Harness(app)
        h.feed(request())
        backlog = request("GET", "/", "X-Pad: " + "p" * 250) * 300
        assert len(backlog) > BODY_BUFFER
        h.feed(backlog)
        assert not h.transport.reading
        gate.set()
        await h.until(lambda: h.out.count(b"HTTP/1.1 200") == 301)
        assert h.transport.reading

    run(main())


def test_data_after_close_is_ignored() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(b"garbage\r\n\r\n")
        await h.settle()
        assert h.proto.phase is Phase.CLOSED
        h.proto.data_received(request())
        assert h.out.count(b"HTTP/1.1") == 1

    run(main())


# -- drain -----------------------------------------------------------------------------------


def test_drain_answers_busy_with_close_and_waits_for_idle_keep_alive_deadlines() -> None:
    async def main() -> None:
        gate = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["path"] == "/slow":
                await gate.wait()
            await hello_app(scope, receive, send)

        h = Harness(app, {"keep_alive": 5.0})
        h.feed(request())  # served, now idle keep-alive: its deadline is 5 s from now
        await h.settle()
        idle_until = h.proto.deadline
        busy = h.connect()
        busy.data_received(request("GET", "/slow") + request())
        fresh = h.connect()
        partial = h.connect()
        partial.data_received(b"GET / HTT")
        drain = asyncio.ensure_future(h.state.drain())
        await asyncio.sleep(0)
        assert fresh.deadline <= h.loop.time() + 5.0
        h.advance(idle_until - h.loop.time() - 0.5)  # to half a second before its deadline
        await h.settle_loop()
        assert h.proto.deadline == idle_until and not h.transport.closed
        late = h.connect()
        assert late.draining
        for conn in (fresh, late):
            conn.data_received(request())
        partial.data_received(b"P/1.1\r\nHost: t\r\n\r\n")
        gate.set()
        await h.settle()
        for conn in (busy, fresh, late, partial):
            out = bytes(conn.transport.out)  # type: ignore[attr-defined]
            assert out.count(b"HTTP/1.1 200") == 1 and b"connection: close" in out
        assert not drain.done() and h.state.connections == {h.proto}
        h.state.sweep(h.loop.time())
        assert not h.transport.closed
        h.advance(0.5)
        h.state.sweep(h.loop.time())  # its ordinary keep-alive timeout
        assert h.transport.closed and h.out.count(b"HTTP/1.1 ") == 1
        await asyncio.wait_for(drain, 5)
        assert not h.state.connections

    run(main())


def test_drain_with_no_connections_returns_at_once() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.proto.connection_lost(None)
        await asyncio.wait_for(h.state.drain(), 5)
        assert h.state.draining and not h.state.connections
        assert h.connect().draining  # a connection accepted from now on drains too

    run(main())


def test_drain_after_head_sent_with_keep_alive_still_closes() -> None:
    async def main() -> None:
        gate = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send(START)
            await send({**BODY, "more_body": True})
            await gate.wait()
            await send({**BODY, "body": b""})

        h = Harness(app)
        h.feed(request())
        await h.until(lambda: h.out != b"")
        drain = asyncio.ensure_future(h.state.drain())
        gate.set()
        await asyncio.wait_for(drain, 5)
        assert h.transport.closed and h.out.endswith(b"0\r\n\r\n")

    run(main())


def test_empty_forwarded_for_and_trust_cache() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"proxy_headers": True})
        scope = await _scope_of(h, request("GET", "/", "X-Forwarded-For: , "))
        assert scope["client"] == ("127.0.0.1", 50000)
        scope = await _scope_of(h, request("GET", "/", "X-Forwarded-For: 5.6.7.8"))
        assert scope["client"] == ("5.6.7.8", 0)

    run(main())


def test_cancelled_request_task_is_closed_and_reraised() -> None:
    async def main() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await asyncio.Event().wait()

        h = Harness(app)
        h.feed(request())
        await asyncio.sleep(0)
        [task] = h.state.tasks
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert h.out.startswith(b"HTTP/1.1 500 ") and h.transport.closed
        assert h.state.inflight == 0

    run(main())


def test_no_sockname_means_no_server() -> None:
    async def main() -> None:
        h = Harness(hello_app, sockname=None)
        scope = await _scope_of(h, request())
        assert scope["server"] is None

    run(main())


def test_reading_resumes_when_the_app_takes_a_paused_body() -> None:
    async def main() -> None:
        h = Harness(echo_app())
        h.feed(request("POST", "/", "Content-Length: 100000") + b"a" * 70_000)
        assert not h.transport.reading
        await h.until(lambda: h.transport.reading)
        assert h.proto.deadline > 0
        h.feed(b"b" * 30_000)
        await h.settle()
        assert h.responses("POST")[0].body == b"a" * 70_000 + b"b" * 30_000

    run(main())


def test_no_100_continue_once_the_response_started() -> None:
    async def main() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send(START)
            await receive()
            await send(BODY)

        h = Harness(app)
        h.feed(request("POST", "/", "Expect: 100-continue", "Content-Length: 2"))
        await asyncio.sleep(0)
        h.feed(b"xy")
        await h.settle()
        assert b"100 Continue" not in h.out and h.responses("POST")[0].body == b"ok"

    run(main())


def test_drain_answers_the_next_request_of_an_idle_keep_alive_connection_with_close() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"keep_alive": 5.0})
        h.feed(request())  # served, now idle keep-alive
        await h.settle()
        drain = asyncio.ensure_future(h.state.drain())
        await h.settle()
        h.advance(4.5)  # the client paused (its keep-alive timeout is 5 s)
        await h.settle_loop()
        assert not h.transport.closed  # not reset under a request the client may send now
        h.feed(request())
        await asyncio.wait_for(drain, 5)
        [first, last] = h.responses("GET", "GET")
        assert first.status == last.status == 200
        assert first.header(b"connection") is None and last.header(b"connection") == b"close"
        assert h.transport.closed

    run(main())


def test_drain_leaves_a_connection_waiting_for_a_head_at_most_keep_alive() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"keep_alive": 2.0, "header_timeout": 30.0})
        h.feed(b"GET / HT")
        drain = asyncio.ensure_future(h.state.drain())
        await asyncio.sleep(0)
        assert h.proto.deadline <= h.loop.time() + 2.0
        h.state.sweep(h.loop.time() + 2.0)
        assert h.out.startswith(b"HTTP/1.1 408 ") and h.transport.closed
        await asyncio.wait_for(drain, 5)

    run(main())


def test_drain_closes_idle_connections_by_the_workers_last_moment() -> None:
    """A keep-alive timeout longer than the graceful timeout: idle connections close by the
    moment the worker gives them (``idle_for``), not at their own later deadline."""

    async def main() -> None:
        h = Harness(hello_app, {"keep_alive": 60.0})
        h.feed(request())
        await h.settle()
        # (The loop's clock is real: a busy machine may let a second pass before we look.)
        assert h.proto.deadline == pytest.approx(h.loop.time() + 60.0, abs=1.0)
        drain = asyncio.ensure_future(h.state.drain(idle_for=2.0))
        await asyncio.sleep(0)
        assert h.proto.deadline == pytest.approx(h.loop.time() + 2.0, abs=1.0)
        h.advance(2.0)
        h.state.sweep(h.loop.time())
        assert h.transport.closed
        await asyncio.wait_for(drain, 5)

    run(main())

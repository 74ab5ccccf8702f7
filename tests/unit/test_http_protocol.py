"""HTTPProtocol on a fake transport: HTTP/1.1 behaviour, message order, flow control."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _http_fakes import SPLITS, START, Harness, echo_app, gated_hello, hello_app, request, run

from prefork.http import ClientDisconnected


async def answer_now(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(START)
    await send({"type": "http.response.body", "body": scope["path"].encode()})


async def answer_later(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # Earlier requests wait longer: were they run side by side, /1 would be answered last.
    for _ in range(10 - int(scope["path"][1:])):
        await asyncio.sleep(0)
    await answer_now(scope, receive, send)


async def answer_streamed(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(START)
    for byte in scope["path"].encode():
        await send({"type": "http.response.body", "body": bytes([byte]), "more_body": True})
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b""})


async def answer_with_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message["body"]
        more = message["more_body"]
    await send(START)
    await send({"type": "http.response.body", "body": scope["path"].encode() + body})


PIPELINED = (
    request("GET", "/1")
    + request("POST", "/2", "Content-Length: 2", body=b"b2")
    + request("POST", "/3", "Transfer-Encoding: chunked", body=b"2\r\nc3\r\n0\r\n\r\n")
    + request("GET", "/4")
)
PATHS = [b"/1", b"/2", b"/3", b"/4"]


@pytest.mark.parametrize(
    ("app", "bodies"),
    [
        (hello_app, [b"hello"] * 4),
        (answer_now, PATHS),
        (answer_later, PATHS),
        (answer_streamed, PATHS),
        (answer_with_body, [b"/1", b"/2b2", b"/3c3", b"/4"]),
    ],
)
@pytest.mark.parametrize("how", SPLITS)
def test_pipelined_requests_are_answered_in_order(how: str, app: Any, bodies: list[bytes]) -> None:
    async def main() -> None:
        methods = ["GET", "POST", "POST", "GET"]
        h = Harness(app)
        h.feed(PIPELINED, how)
        await h.until(lambda: len(h.responses(*methods)) == 4)
        await h.settle()
        assert [r.body for r in h.responses(*methods)] == bodies
        assert h.out.count(b"HTTP/1.1 ") == 4 and not h.transport.closed

    run(main())


def test_many_pipelined_requests_in_one_write_do_not_recurse() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(request() * 2000)
        await h.settle()
        assert len(h.responses(*["GET"] * 2000)) == 2000

    run(main())


def test_keep_alive_serves_sequential_requests() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        for _ in range(3):
            h.feed(request())
            await h.settle()
        assert [r.status for r in h.responses("GET", "GET", "GET")] == [200, 200, 200]
        assert not h.transport.closed

    run(main())


def test_head_gets_headers_without_body() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(request("HEAD") + request("GET"))
        await h.settle()
        head, get = h.responses("HEAD", "GET")
        assert head.body == b"" and head.header(b"content-length") == b"5"
        assert get.body == b"hello"

    run(main())


def stream_app(chunks: list[bytes], status: int = 200, headers: Any = ()) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        for c in chunks:
            await send({"type": "http.response.body", "body": c, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def test_streamed_response_is_chunked_and_ends_once() -> None:
    async def main() -> None:
        h = Harness(stream_app([b"ab", b"", b"cd"]))
        h.feed(request() + request())
        await h.settle()
        a, _b = h.responses("GET", "GET")
        assert a.body == b"abcd" and a.header(b"transfer-encoding") == b"chunked"
        assert h.out.count(b"0\r\n\r\n") == 2
        assert not h.transport.closed

    run(main())


def test_head_of_a_streamed_response_has_no_body_and_stays_open() -> None:
    async def main() -> None:
        h = Harness(stream_app([b"ab"]))
        h.feed(request("HEAD") + request("GET"))
        await h.settle()
        head, get = h.responses("HEAD", "GET")
        assert head.body == b"" and head.header(b"transfer-encoding") == b"chunked"
        assert get.body == b"ab"
        assert not h.transport.closed

    run(main())


def test_streamed_response_with_content_length_passes_through() -> None:
    async def main() -> None:
        h = Harness(stream_app([b"ab", b"cd"], headers=[(b"content-length", b"4")]))
        h.feed(request())
        await h.settle()
        [r] = h.responses("GET")
        assert r.body == b"abcd" and r.header(b"transfer-encoding") is None

    run(main())


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_drop_body_bytes(status: int) -> None:
    async def main() -> None:
        h = Harness(stream_app([b"zzz"], status=status))
        h.feed(request() + request())
        await h.settle()
        a, _b = h.responses("GET", "GET")
        assert a.status == status and a.body == b""
        assert b"zzz" not in h.out
        assert not h.transport.closed

    run(main())


def test_http_10_request_closes_and_streams_until_close() -> None:
    async def main() -> None:
        seen: list[str] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            seen.append(scope["http_version"])
            await stream_app([b"ab", b"cd"])(scope, receive, send)

        h = Harness(app)
        h.feed(b"GET / HTTP/1.0\r\n\r\n")
        await h.settle()
        assert seen == ["1.0"]
        assert h.out.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"connection: close\r\n" in h.out and h.out.endswith(b"\r\n\r\nabcd")
        assert h.transport.closed

    run(main())


def test_http_10_head_of_streamed_response_closes() -> None:
    async def main() -> None:
        h = Harness(stream_app([b"ab"]))
        h.feed(b"HEAD / HTTP/1.0\r\n\r\n")
        await h.settle()
        assert b"transfer-encoding" not in h.out and b"connection: close" in h.out
        assert h.transport.closed

    run(main())


KEEP_10 = b"GET /%d HTTP/1.0\r\nHost: t\r\nConnection: Keep-Alive\r\n\r\n"


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("host", [b"Host: t\r\n", b""])  # a Host-less head goes to h11
def test_http_10_keep_alive_is_kept_when_the_length_is_known(how: str, host: bytes) -> None:
    async def main() -> None:
        h = Harness(answer_now)
        one = b"GET /%d HTTP/1.0\r\n" + host + b"Connection: keep-alive\r\n\r\n"
        h.feed(one % 1 + one % 2, how)
        await h.settle()
        responses = h.responses("GET", "GET")
        assert [r.body for r in responses] == [b"/1", b"/2"]
        assert [r.header(b"connection") for r in responses] == [b"keep-alive"] * 2
        assert not h.transport.closed  # and the next request on it is served
        h.feed(KEEP_10 % 3)
        await h.settle()
        assert [r.body for r in h.responses("GET", "GET", "GET")][2] == b"/3"
        assert not h.transport.closed

    run(main())


def test_http_10_keep_alive_without_a_length_closes() -> None:
    async def main() -> None:
        h = Harness(stream_app([b"ab", b"cd"]))
        h.feed(KEEP_10 % 1 + KEEP_10 % 2)
        await h.settle()
        assert h.out.count(b"HTTP/1.1 200") == 1 and b"connection: close\r\n" in h.out
        assert h.out.endswith(b"\r\n\r\nabcd") and h.transport.closed

    run(main())


def test_connection_close_request_closes_and_ignores_pipelined() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(request("GET", "/", "Connection: close") + request())
        await h.settle()
        assert h.out.count(b"HTTP/1.1") == 1 and b"connection: close" in h.out
        assert h.transport.closed

    run(main())


def test_app_connection_close_header_closes() -> None:
    async def main() -> None:
        h = Harness(stream_app([b"x"], headers=[(b"Connection", b"Close")]))
        h.feed(request())
        await h.settle()
        assert h.out.count(b"connection: close") == 1
        assert h.transport.closed

    run(main())


@pytest.mark.parametrize("how", SPLITS)
def test_post_bodies_reach_the_app(how: str) -> None:
    async def main() -> None:
        h = Harness(echo_app())
        chunked = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
        h.feed(
            request("POST", "/", "Content-Length: 3", body=b"abc")
            + request("POST", "/", "Transfer-Encoding: chunked", body=chunked)
            + request("POST", "/", "Content-Length: 0"),
            how,
        )
        await h.settle()
        assert [r.body for r in h.responses("POST", "POST", "POST")] == [
            b"abc",
            b"hello world",
            b"",
        ]

    run(main())


def test_large_body_pauses_reading_until_the_app_reads() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        got = bytearray()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await gate.wait()
            while True:
                m = await receive()
                got.extend(m["body"])
                if not m["more_body"]:
                    break
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        h = Harness(app)
        body = b"x" * 100_000
        h.feed(request("POST", "/", f"Content-Length: {len(body)}"))
        for i in range(0, len(body), 10_000):
            h.proto.data_received(body[i : i + 10_000])  # a real transport stops when paused
        assert not h.transport.reading and h.proto.deadline == 0.0
        gate.set()
        await h.settle()
        assert bytes(got) == body and h.transport.reading
        assert h.responses("POST")[0].body == b"ok"

    run(main())


def test_early_response_discards_the_unread_body_and_keeps_the_connection() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(request("POST", "/", "Content-Length: 100000"))
        h.feed(b"y" * 70_000)
        await h.settle()
        assert len(h.responses("POST")) == 1
        h.feed(b"y" * 30_000 + request())
        await h.settle()
        assert [r.status for r in h.responses("POST", "GET")] == [200, 200]
        assert not h.transport.closed

    run(main())


def test_early_response_with_paused_reading_resumes_to_discard() -> None:
    async def main() -> None:
        gate, app = gated_hello()
        h = Harness(app)
        h.feed(request("POST", "/", "Content-Length: 100000") + b"y" * 70_000)
        assert not h.transport.reading
        gate.set()
        await h.settle()
        assert h.transport.reading
        h.feed(b"y" * 30_000 + request())
        await h.settle()
        assert len(h.responses("POST", "GET")) == 2

    run(main())


def test_receive_after_response_and_after_body_gives_disconnect() -> None:
    async def main() -> None:
        messages: list[Any] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            messages.append(await receive())
            await hello_app(scope, receive, send)
            messages.append(await receive())

        h = Harness(app)
        h.feed(request())
        await h.settle()
        assert messages == [
            {"type": "http.request", "body": b"", "more_body": False},
            {"type": "http.disconnect"},
        ]

    run(main())


def test_client_disconnect_wakes_receive_and_send_raises() -> None:
    async def main() -> None:
        outcome: list[Any] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()  # the whole (empty) body
            outcome.append(await receive())  # waits for the disconnect
            try:
                await send({"type": "http.response.start", "status": 200})
            except ClientDisconnected as exc:
                outcome.append(exc)
                raise

        h = Harness(app)
        h.feed(request())
        await asyncio.sleep(0)
        h.proto.connection_lost(None)
        await h.settle()
        assert outcome[0] == {"type": "http.disconnect"}
        assert isinstance(outcome[1], OSError)
        assert h.out == b""

    run(main())


def test_expect_100_continue_only_when_the_body_is_read() -> None:
    async def main() -> None:
        h = Harness(echo_app())
        h.feed(request("POST", "/", "Expect: 100-continue", "Content-Length: 3"))
        await h.until(lambda: b"100 Continue" in h.out)
        h.feed(b"abc")
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")

        h2 = Harness(hello_app)
        h2.feed(request("POST", "/", "Expect: 100-continue", "Content-Length: 3"))
        await h2.settle()
        assert b"100 Continue" not in h2.out and h2.out.startswith(b"HTTP/1.1 200")

    run(main())


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"x" * 1000 + b"\r\n\r\n", 400),
        (request("POST", "/", "Content-Length: 3", "Transfer-Encoding: chunked"), 400),
        (request("POST", "/", "Content-Length: 3", "Content-Length: 3"), 400),
        (request("POST", "/", "Content-Length: 3, 3"), 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (request("GET", "foo/bar"), 400),
        (request("GET", "example.com:443"), 400),
        (request("GET", "*"), 400),
        (request("PUT", "s://]ufd/:"), 400),
        (request("CONNECT", "example.com:443"), 501),
        (request("CONNECT", "/"), 501),
        (request("POST", "/", "Transfer-Encoding: gzip"), 501),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (request("GET", "/", "X: a\x00b"), 400),
        (request("GET", "/", "Upgrade: websocket", "Connection: Upgrade"), 400),
    ],
)
def test_bad_requests_are_refused_and_closed(raw: bytes, status: int, how: str) -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(raw + request(), how)
        await h.settle()
        [r] = h.responses("GET")
        assert r.status == status and r.header(b"connection") == b"close"
        assert h.transport.closed and h.state.tasks == set()
        assert h.out.count(b"HTTP/1.1 ") == 1

    run(main())


def test_websocket_refusal_says_why() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(request("GET", "/ws", "Upgrade: websocket", "Connection: keep-alive, Upgrade"))
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 400 ")
        assert b"A WebSocket handshake needs Sec-WebSocket-Version: 13." in h.out

    run(main())


def test_h2c_upgrade_is_served_as_plain_http() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(request("GET", "/", "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings"))
        await h.settle()
        assert h.responses("GET")[0].body == b"hello" and not h.transport.closed

    run(main())


@pytest.mark.parametrize("how", SPLITS)
def test_absolute_form_options_star_and_leading_empty_lines_are_accepted(how: str) -> None:
    async def main() -> None:
        paths: list[tuple[str, bytes]] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            paths.append((scope["path"], scope["query_string"]))
            await hello_app(scope, receive, send)

        h = Harness(app)
        h.feed(
            b"\r\n"
            + request("GET", "http://example.com/a/b?x=1")
            + request("GET", "HTTPS://example.com")
            + request("GET", "http://example.com?q")
            + request("OPTIONS", "*"),
            how,
        )
        await h.settle()
        assert paths == [("/a/b", b"x=1"), ("/", b""), ("/", b"q"), ("*", b"")]

    run(main())


def test_only_empty_lines_wait_for_more() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(b"\r\n\r\n")
        h.feed(request())
        await h.settle()
        assert h.responses("GET")[0].status == 200

    run(main())


@pytest.mark.parametrize("how", ["whole", "random"])
@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        (request("GET", "/", "X: " + "a" * 8200), 431),
        (request("GET", "/", *[f"X-{i}: a" for i in range(101)]), 431),
        (request("GET", "/", *[f"X-{i}: " + "a" * 8000 for i in range(9)]), 431),
        (b"GET /" + b"a" * 9000, 414),  # no newline yet
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000, 431),  # incomplete long field
        (b"GET / HTTP/1.1\r\n" + b"X: aaaaaaaa\r\n" * 6000, 431),  # incomplete long head
    ],
)
def test_size_limits_whatever_the_write_sizes(raw: bytes, status: int, how: str) -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(raw, how, seed=3)
        await h.settle()
        [r] = h.responses("GET")
        assert r.status == status and h.transport.closed

    run(main())


def test_limits_at_the_edge_pass() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        line = b"GET /" + b"a" * (8190 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
        assert len(line) == 8190
        # the request line's limit leaves out its CRLF, a field line's counts it (as gunicorn's)
        h.feed(line + b"\r\nHost: t\r\n" + b"X: " + b"b" * 8185 + b"\r\n\r\n")
        h.feed(request("GET", "/", *[f"X-{i}: a" for i in range(99)]), "random")
        await h.settle()
        assert [r.status for r in h.responses("GET", "GET")] == [200, 200]

    run(main())


def test_a_pipelined_head_completed_before_its_turn_is_started_once() -> None:
    async def main() -> None:
        started: list[str] = []
        second = request("GET", "/2")
        late = second[10:] + request("GET", "/3")

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            started.append(scope["path"])
            await answer_later(scope, receive, send)  # /2 takes longer than /3 would
            if scope["path"] == "/1":
                # The rest of /2 (and all of /3) arrives after /1's response scheduled the
                # next head but before that callback ran: /2 starts now, /3 waits its turn.
                h.proto.data_received(late)

        h = Harness(app)
        h.feed(request("GET", "/1") + second[:10])
        await h.settle()
        assert started == ["/1", "/2", "/3"]
        assert [r.body for r in h.responses("GET", "GET", "GET")] == [b"/1", b"/2", b"/3"]

    run(main())


def test_a_pipelined_request_is_not_started_once_the_connection_is_lost() -> None:
    async def main() -> None:
        started: list[str] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            started.append(scope["path"])
            await answer_now(scope, receive, send)
            h.proto.connection_lost(None)  # before the next head's turn comes

        h = Harness(app)
        h.feed(request("GET", "/1") + request("GET", "/2"))
        await h.settle()
        assert started == ["/1"] and h.out.count(b"HTTP/1.1 ") == 1

    run(main())


def test_pipelined_requests_within_limit_concurrency_one_are_all_served() -> None:
    async def main() -> None:
        # The app's task counts itself out of ``inflight`` as it ends, before the next
        # pipelined request is admitted (a done-callback would run after it: 503).
        h = Harness(answer_now, {"limit_concurrency": 1})
        h.feed(request("GET", "/1") + request("GET", "/2") + request("GET", "/3"))
        await h.settle()
        assert [r.status for r in h.responses("GET", "GET", "GET")] == [200, 200, 200]
        assert h.state.inflight == 0 and h.state.requests == 3

    run(main())

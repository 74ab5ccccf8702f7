"""Hardening on a fake transport: strict chunked bodies, the request body limit, long
Content-Length values, the field size limit as gunicorn counts it, bodiless responses (HEAD,
204, 304) and the write timeout for clients that stop reading."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from _http_fakes import SPLITS, START, Harness, echo_app, hello_app, request, run

CHUNKED = "Transfer-Encoding: chunked"


def completed(messages: list[dict[str, Any]]) -> bool:
    return any(m.get("more_body") is False for m in messages)


# -- strict chunked request bodies ------------------------------------------------------------


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    "body",
    [
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",  # bare CR in an extension
        b"5;a\x00\r\nhello\r\n0\r\n\r\n",  # NUL
        b"5;a=\x01\r\nhello\r\n0\r\n\r\n",  # another control byte
        b'5;a="x\x7f"\r\nhello\r\n0\r\n\r\n',  # DEL in a quoted value
        b"5 \r\nhello\r\n0\r\n\r\n",  # whitespace after the size
        b"5\r\nhello\r\n0 \r\n\r\n",  # ... of the last chunk
        b"5\r\nhello\r\n0\t\r\n\r\n",
        b"5;\r\nhello\r\n0\r\n\r\n",  # empty extension name
        b"5;a=b \r\nhello\r\n0\r\n\r\n",  # trailing whitespace
        b'5;a="x\r\nhello\r\n0\r\n\r\n',  # unterminated quoted value
        b"5;" + b"a" * 9000 + b"\r\nhello\r\n0\r\n\r\n",  # over the field size limit
        b"0" * 4999 + b"5\r\nhello\r\n0\r\n\r\n",  # a size of 5,000 hex digits (h11 reads 20)
    ],
)
def test_bad_chunk_headers_are_refused_before_the_app_gets_the_body(body: bytes, how: str) -> None:
    async def main() -> None:
        messages: list[dict[str, Any]] = []
        h = Harness(echo_app(messages))
        h.feed(request("POST", "/", CHUNKED, body=body) + request(), how, seed=7)
        await h.settle()
        [r] = h.responses("POST")
        assert r.status == 400 and r.header(b"connection") == b"close"
        assert h.transport.closed and h.out.count(b"HTTP/1.1 ") == 1
        assert not completed(messages)
        if body.startswith(b"5;") or how == "whole":
            assert all(m.get("body", b"") == b"" for m in messages)

    run(main())


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    "body",
    [
        b"3\r\nabcXY0\r\n\r\n",  # chunk data not ended by CRLF
        b"3\r\nabc\r\n0\r\nBad Trailer\r\n\r\n",  # a trailer field h11 finds malformed
    ],
)
def test_bad_chunk_data_ends_and_trailer_fields_are_refused(body: bytes, how: str) -> None:
    async def main() -> None:
        messages: list[dict[str, Any]] = []
        h = Harness(echo_app(messages))
        h.feed(request("POST", "/", CHUNKED, body=body) + request(), how, seed=5)
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 400 ") and h.out.count(b"HTTP/1.1 ") == 1
        assert h.transport.closed and not completed(messages)

    run(main())


@pytest.mark.parametrize("how", SPLITS)
def test_well_formed_chunk_extensions_and_trailers_pass(how: str) -> None:
    async def main() -> None:
        messages: list[dict[str, Any]] = []
        h = Harness(echo_app(messages))
        body = (
            b'5; a = "q\\"t" ;b\t;c=d\r\nhello\r\n'
            b'000A;x="\t\x80"\r\n0123456789\r\n'
            b"0;last\r\nX-T: 1\r\n\r\n"
        )
        h.feed(request("POST", "/", CHUNKED, body=body) + request(), how, seed=11)
        await h.settle()
        post, get = h.responses("POST", "GET")
        assert post.body == b"hello0123456789" and get.status == 200
        assert not h.transport.closed and h.proto._body is None

    run(main())


def test_bad_chunk_header_while_discarding_closes_without_a_second_response() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(request("POST", "/", CHUNKED, body=b"3\r\nabc\r\n"))
        await h.settle()
        assert h.responses("POST")[0].body == b"hello"
        h.feed(b"0 \r\n\r\n" + request())
        await h.settle()
        assert h.out.count(b"HTTP/1.1 ") == 1 and h.transport.closed

    run(main())


def test_bodies_that_are_not_chunked_are_not_scanned() -> None:
    async def main() -> None:
        messages: list[dict[str, Any]] = []
        h = Harness(echo_app(messages))
        h.feed(request("POST", "/", "Content-Length: 9"))
        assert type(h.proto._body).__name__ == "LengthBody"  # counted, not scanned
        h.feed(b"0 \r\n\r\n\x00;\r")
        await h.settle()
        assert h.responses("POST")[0].body == b"0 \r\n\r\n\x00;\r"

    run(main())


# -- limit_request_body ----------------------------------------------------------------------


@pytest.mark.parametrize("how", SPLITS)
def test_content_length_over_the_limit_is_413_before_the_app_runs(how: str) -> None:
    async def main() -> None:
        messages: list[dict[str, Any]] = []
        h = Harness(echo_app(messages), {"limit_request_body": 10})
        h.feed(
            request("POST", "/", "Content-Length: 11", "Expect: 100-continue", body=b"x" * 11)
            + request(),
            how,
        )
        await h.settle()
        [r] = h.responses("POST")
        assert r.status == 413 and r.header(b"connection") == b"close"
        assert messages == [] and h.transport.closed and h.out.count(b"HTTP/1.1 ") == 1
        assert h.state.requests == 0

    run(main())


@pytest.mark.parametrize("how", SPLITS)
def test_bodies_up_to_the_limit_pass(how: str) -> None:
    async def main() -> None:
        messages: list[dict[str, Any]] = []
        h = Harness(echo_app(messages), {"limit_request_body": 10})
        h.feed(
            request("POST", "/", "Content-Length: 10", body=b"a" * 10)
            + request("POST", "/", CHUNKED, body=b"4\r\nbbbb\r\n6\r\ncccccc\r\n0\r\n\r\n"),
            how,
        )
        await h.settle()
        assert [r.body for r in h.responses("POST", "POST")] == [b"a" * 10, b"bbbbcccccc"]
        assert not h.transport.closed

    run(main())


@pytest.mark.parametrize("how", SPLITS)
def test_chunked_body_growing_past_the_limit_is_413_if_nothing_was_sent(how: str) -> None:
    async def main() -> None:
        messages: list[dict[str, Any]] = []
        h = Harness(echo_app(messages), {"limit_request_body": 10})
        body = b"6\r\naaaaaa\r\n5\r\nbbbbb\r\n0\r\n\r\n"
        h.feed(request("POST", "/", CHUNKED, body=body) + request(), how)
        await h.settle()
        [r] = h.responses("POST")
        assert r.status == 413 and h.transport.closed and h.out.count(b"HTTP/1.1 ") == 1
        assert not completed(messages)
        assert b"bbbbb" not in b"".join(m.get("body", b"") for m in messages)

    run(main())


def test_chunked_body_growing_past_the_limit_after_the_response_began_closes() -> None:
    async def main() -> None:
        seen: list[Any] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send(START)
            await send({"type": "http.response.body", "body": b"early", "more_body": True})
            while (message := await receive())["type"] == "http.request":
                seen.append(message)
            seen.append(message)

        h = Harness(app, {"limit_request_body": 10})
        h.feed(request("POST", "/", CHUNKED, body=b"6\r\naaaaaa\r\n"))
        await h.until(lambda: b"early" in h.out)
        h.feed(b"5\r\nbbbbb\r\n0\r\n\r\n")
        await h.settle()
        assert h.transport.closed and b"413" not in h.out
        assert seen[-1] == {"type": "http.disconnect"}

    run(main())


def test_limit_counts_the_whole_body_not_what_is_buffered() -> None:
    async def main() -> None:
        messages: list[dict[str, Any]] = []
        h = Harness(echo_app(messages), {"limit_request_body": 10})
        h.feed(request("POST", "/", CHUNKED, body=b"6\r\naaaaaa\r\n"))
        await h.until(lambda: len(messages) == 1)  # the app took the first chunk
        h.feed(b"5\r\nbbbbb\r\n0\r\n\r\n")
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 413 ") and h.transport.closed

    run(main())


# -- Content-Length: at most 20 digits, as h11 reads it ----------------------------------------


@pytest.mark.parametrize("how", ["whole", "bytes"])
@pytest.mark.parametrize(
    "length",
    ["0" * 20 + "5", "0" * 29 + "5", "0" * 4999 + "5", "1" * 21, "9" * 30, "1" * 5000],
    ids=lambda length: f"{len(length)}-digits-{length[0]}",
)
def test_a_content_length_of_more_than_20_digits_is_400_in_either_parser(
    length: str, how: str, http_parser: str
) -> None:
    """h11 refuses it; the fast path read it (and 4,301 digits or more raised in ``int()``).
    Whichever parser reads the head, the same answer, and the pipelined GET is not read."""

    async def main() -> None:
        messages: list[dict[str, Any]] = []
        h = Harness(echo_app(messages), {"http": http_parser})
        h.feed(request("POST", "/", f"Content-Length: {length}", body=b"hello") + request(), how)
        await h.settle()
        assert h.out.count(b"HTTP/1.1 ") == 1 and h.transport.closed
        [r] = h.responses("POST")
        assert (r.status, r.body, r.header(b"connection")) == (
            400, b"Invalid HTTP request.\n", b"close",
        )  # fmt: skip
        assert messages == [] and h.state.requests == 0

    run(main())


@pytest.mark.parametrize("how", ["whole", "bytes"])
def test_a_content_length_of_20_digits_is_read(how: str, http_parser: str) -> None:
    async def main() -> None:
        messages: list[dict[str, Any]] = []
        h = Harness(echo_app(messages), {"http": http_parser})
        length = "0" * 19 + "5"
        h.feed(request("POST", "/", f"Content-Length: {length}", body=b"hello") + request(), how)
        await h.settle()
        post, get = h.responses("POST", "GET")
        assert (post.status, post.body, get.status) == (200, b"hello", 200)

    run(main())


# -- --limit-request-field-size: the field line with its CRLF, as gunicorn counts ---------------


def field_line(size: int) -> str:
    """A header field line of ``size`` bytes with its CRLF (``request`` adds the CRLF)."""
    return "X-Pad: " + "v" * (size - 9)


@pytest.mark.parametrize("how", ["whole", "bytes"])
@pytest.mark.parametrize("limit", [98, 8190])
def test_a_field_line_with_its_crlf_at_the_limit_passes_one_byte_more_is_431(
    limit: int, how: str, http_parser: str
) -> None:
    async def main(size: int) -> bytes:
        h = Harness(hello_app, {"limit_request_field_size": limit, "http": http_parser})
        h.feed(request("GET", "/", field_line(size)) + request(), how)
        await h.settle()
        if size > limit:
            assert h.transport.closed and h.out.count(b"HTTP/1.1 ") == 1
        return h.out

    assert run(main(limit)).count(b"HTTP/1.1 200 ") == 2
    refused = run(main(limit + 1))  # gunicorn's case: 97 bytes, 99 with CRLF, over 98
    assert refused.startswith(b"HTTP/1.1 431 ") and b"Request header field too large.\n" in refused


@pytest.mark.parametrize("how", ["whole", "bytes"])
def test_a_trailer_field_line_counts_its_crlf_too(how: str, http_parser: str) -> None:
    async def main(size: int) -> bytes:
        h = Harness(echo_app(), {"limit_request_field_size": 98, "http": http_parser})
        body = b"3\r\nabc\r\n0\r\n" + field_line(size).encode() + b"\r\n\r\n"
        h.feed(request("POST", "/", CHUNKED, body=body) + request(), how)
        await h.settle()
        return h.out

    assert run(main(98)).count(b"HTTP/1.1 200 ") == 2
    assert run(main(99)).startswith(b"HTTP/1.1 431 ")


# -- responses without a body ----------------------------------------------------------------


def bodyless_app(status: int, headers: list[tuple[bytes, bytes]], stream: bool) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if stream:
            await send({"type": "http.response.body", "body": b"hello", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": b"hello"})

    return app


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("status", "method", "headers", "length"),
    [
        (204, "GET", [(b"content-length", b"5")], None),
        (204, "GET", [(b"transfer-encoding", b"chunked")], None),
        (204, "GET", [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")], None),
        (204, "HEAD", [(b"content-length", b"5")], None),
        (304, "GET", [(b"content-length", b"5")], b"5"),
        (304, "GET", [(b"transfer-encoding", b"chunked")], None),
        (304, "HEAD", [(b"content-length", b"7")], b"7"),
        (200, "HEAD", [(b"content-length", b"7")], b"7"),
        (200, "HEAD", [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")], b"5"),
    ],
)
def test_bodiless_responses_send_no_body_and_no_chunking(
    status: int, method: str, headers: list[tuple[bytes, bytes]], length: bytes | None, stream: bool
) -> None:
    async def main() -> None:
        h = Harness(bodyless_app(status, headers, stream))
        h.feed(request(method) * 2)
        await h.settle()
        first_end = h.out.index(b"\r\n\r\n") + 4
        head = h.out[:first_end].lower()
        assert head.startswith(b"http/1.1 %d " % status)
        assert b"transfer-encoding" not in head
        if length is None:
            assert b"content-length" not in head
        else:
            assert b"content-length: " + length + b"\r\n" in head
        assert h.out[first_end:].startswith(b"HTTP/1.1 %d " % status)  # no body bytes between
        assert h.out.count(b"hello") == 0 and not h.transport.closed

    run(main())


# -- the write timeout -----------------------------------------------------------------------


def streaming_app(outcome: list[Any]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(START)
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
                outcome.append("sent")
                await asyncio.sleep(0)
        except OSError as exc:
            outcome.append(exc)

    return app


def test_a_client_that_stops_reading_is_aborted_after_the_body_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        outcome: list[Any] = []
        h = Harness(streaming_app(outcome), {"body_timeout": 10.0})
        h.proto.pause_writing()  # the client's window is full
        now = h.loop.time()
        h.feed(request())
        await h.until(lambda: h.proto.flow._waiter is not None)
        h.state.sweep(now + 9.0)
        assert not h.transport.closed
        h.state.sweep(now + 10.5)
        assert h.transport.aborted
        await h.settle()
        assert len(outcome) == 1 and type(outcome[0]).__name__ == "ClientDisconnected"
        assert not h.state.connections and h.state.inflight == 0

    caplog.set_level(logging.DEBUG, logger="prefork.http")
    run(main())
    # the app caught the error and returned: the client's doing, not an app error
    assert [r.levelno for r in caplog.records if r.name == "prefork.http"] == [logging.DEBUG]


def test_reading_again_clears_the_write_deadline() -> None:
    async def main() -> None:
        outcome: list[Any] = []
        h = Harness(streaming_app(outcome), {"body_timeout": 10.0})
        h.proto.pause_writing()
        h.feed(request())
        await h.until(lambda: h.proto.flow._waiter is not None)
        h.proto.resume_writing()
        await h.until(lambda: len(outcome) >= 3)
        h.proto.pause_writing()  # again: a fresh deadline from now
        later = h.loop.time() + 9.0
        h.state.sweep(later)
        assert not h.transport.closed
        h.proto.resume_writing()
        h.state.sweep(later + 100)
        assert not h.transport.closed
        h.proto.connection_lost(None)
        await h.settle()

    run(main())


def test_a_close_waiting_on_an_unread_buffer_is_aborted_after_the_body_timeout() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"body_timeout": 10.0})
        h.transport.hold_close = True  # a real close waits until the client read everything
        h.proto.pause_writing()
        h.feed(request("GET", "/", "Connection: close"))
        await h.settle()
        now = h.loop.time()  # after the deadline was set: however long that took
        assert h.transport.closed and not h.transport.aborted
        assert h.state.connections == {h.proto}
        h.state.sweep(now + 10.5)
        assert h.transport.aborted
        await h.settle()
        assert not h.state.connections

    run(main())


def test_paused_writes_after_a_complete_response_are_bounded_too() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"body_timeout": 2.0, "keep_alive": 30.0})
        h.feed(request())
        await h.settle()
        h.proto.pause_writing()  # the response sits in the buffer, the client reads nothing
        h.state.sweep(h.loop.time() + 3.0)
        assert h.transport.aborted
        await asyncio.sleep(0)
        assert not h.state.connections

    run(main())

"""WSGI over the connection code: a real thread pool, a fake transport. Every app here is
wrapped in ``wsgiref.validate.validator`` and its warnings are errors (the ``validated``
fixture), so a breach of PEP 3333 by the server fails the test. Waits are on conditions
(``Harness.until``), never on time; the stuck-thread rule runs on an injected clock."""

from __future__ import annotations

import asyncio
import io
import linecache
import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.validate import WSGIWarning, validator

import pytest
from _http_fakes import Harness, request, run

from prefork.http._app import served_interface
from prefork.http._state import ServerState
from prefork.http._wsgi import WSGICycle, checked_headers, parse_status, thread_stack
from prefork.http._wsgi_environ import FileWrapper, base_environ
from prefork.http._wsgi_pool import WSGIPool

WSGIApp = Callable[..., Any]


@pytest.fixture(autouse=True)
def validated() -> Iterator[None]:
    """A ``WSGIWarning`` from the validator is an error (the app raises it: a 500)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", WSGIWarning)
        yield


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class WSGIHarness(Harness):
    """A connection served by a WSGI app (validated) in a pool of ``threads`` threads."""

    threads: int = 2
    timeout: float = 0.0

    def __post_init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._offset: float | None = None
        from prefork.http._config import HTTPConfig

        self.config = HTTPConfig(app=self.app, interface="wsgi", **self.options)
        self.retired = 0
        self.clock = Clock()
        self.pool = WSGIPool(
            validator(self.app),
            base_environ(threads=self.threads),
            self.threads,
            timeout=self.timeout,
            on_stuck=self._retire,
            clock=self.clock,
        )
        self.pool.start()
        self.state = ServerState(
            self.config, self.app, self.loop, retire=self._retire, pool=self.pool
        )
        self.proto = self.connect()
        self.transport = self.proto.transport  # type: ignore[assignment]

    async def done(self, answers: int = 0) -> None:
        """Until ``answers`` responses began and no request is in flight (every thread is
        through with its request)."""
        await self.until(
            lambda: self.state.inflight == 0 and self.out.count(b"HTTP/1.1 ") >= answers
        )
        await self.settle_loop()

    def stop(self) -> None:
        self.pool.stop()


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    stream = environ["wsgi.input"]
    if environ.get("CONTENT_LENGTH"):
        body = stream.read(int(environ["CONTENT_LENGTH"]))
    else:
        body = b"".join(iter(lambda: stream.read(1000), b""))
    start_response("200 OK", [TEXT, ("Content-Length", str(len(body)))])
    return [body]


def post(body: bytes, target: str = "/") -> bytes:
    return request("POST", target, f"Content-Length: {len(body)}", body=body)


TEXT = ("Content-Type", "text/plain")


def serve(app: WSGIApp, data: bytes, *methods: str, **kw: Any) -> list[Any]:
    async def main() -> list[Any]:
        h = WSGIHarness(app, **kw)
        h.feed(data)
        await h.done(len(methods))
        h.stop()
        return h.responses(*methods)

    result: list[Any] = run(main())
    return result


# -- the response ---------------------------------------------------------------------------


def test_hello_is_one_call_from_the_thread_to_the_loop() -> None:
    calls: list[object] = []

    async def main() -> bytes:
        h = WSGIHarness(hello)
        real = h.loop.call_soon_threadsafe

        def counted(callback: Any, *args: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                calls.append(callback)
            return real(callback, *args)

        h.loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        h.feed(request())
        await h.done()
        h.stop()
        return h.out

    out = run(main())
    assert out.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n")
    assert out.endswith(b"\r\n\r\nhello")
    assert len(calls) == 1


def test_the_status_line_and_header_names_go_out_as_the_app_gave_them() -> None:
    """As under gunicorn (PEP 3333 hands the status string to the server): Flask's "302
    FOUND" and "X-Request-ID" stay so; the framing still reads the names case-blind."""

    def found(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(
            "302 FOUND", [("Location", "/x"), ("X-Request-ID", "7"), TEXT, ("CONTENT-length", "2")]
        )
        return [b"ok"]

    async def main() -> bytes:
        h = WSGIHarness(found)
        h.feed(request() + request("HEAD"))
        await h.done(2)
        h.stop()
        return h.out

    out = run(main())
    first, second = out.split(b"ok", 1)
    assert first.startswith(
        b"HTTP/1.1 302 FOUND\r\nLocation: /x\r\nX-Request-ID: 7\r\nContent-Type: text/plain\r\n"
    )
    assert b"CONTENT-length: 2\r\n" in first and b"transfer-encoding" not in out
    assert second.startswith(b"HTTP/1.1 302 FOUND\r\n") and b"CONTENT-length: 2" in second


def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    (a, b) = serve(echo, post(b"one") + post(b"two!"), "P", "P")
    assert (a.body, b.body) == (b"one", b"two!")


def test_a_generator_streams_chunked_and_is_closed() -> None:
    closed = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [TEXT])

        def body() -> Iterator[bytes]:
            try:
                yield b""  # an empty chunk first: the head waits for a non-empty one
                yield b"ab"
                yield b"cd"
            finally:
                closed.set()

        return body()

    (response,) = serve(app, request(), "GET")
    assert response.header(b"transfer-encoding") == b"chunked" and response.body == b"abcd"
    assert closed.is_set()


def test_a_list_of_several_chunks_and_the_write_callable() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [TEXT])
        write(b"w1")
        write(b"")
        return [b"a", b"b"]

    (response,) = serve(app, request(), "GET")
    assert response.body == b"w1ab"


def test_head_has_no_body_and_an_empty_body_gets_a_length() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/none":
            start_response("204 No Content", [])
        else:
            start_response("200 OK", [TEXT])
        return []

    head, get, none = serve(hello, request("HEAD"), "HEAD", threads=1) + serve(
        app, request() + request("GET", "/none"), "GET", "GET"
    )
    assert head.body == b"" and head.header(b"content-length") == b"5"
    assert get.header(b"content-length") == b"0" and none.status == 204


def test_exc_info_replaces_a_response_not_sent() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [TEXT])
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Oops", [TEXT, ("Content-Length", "4")], sys.exc_info())
        return [b"oops"]

    (response,) = serve(app, request(), "GET")
    assert response.status == 500 and response.body == b"oops"


def test_exc_info_is_raised_again_once_the_head_was_sent(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        write = start_response("200 OK", [TEXT])
        write(b"begun")
        try:
            raise ValueError("too late")
        except ValueError:
            start_response("500 Oops", [TEXT], sys.exc_info())
        return []

    async def main() -> WSGIHarness:
        h = WSGIHarness(app)
        h.feed(request())
        await h.done()
        h.stop()
        return h

    h = run(main())
    assert h.out.startswith(b"HTTP/1.1 200 OK") and h.transport.closed
    assert "too late" in caplog.text


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("raise", "the app broke"),
        ("twice", "start_response called a second time"),
        ("no start", "without calling start_response"),
        ("too long", "longer than its Content-Length"),
    ],
)
def test_an_app_failing_before_its_head_is_sent_gets_a_500(
    caplog: pytest.LogCaptureFixture, body: str, words: str
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if body == "raise":
            raise RuntimeError("the app broke")
        if body == "no start":
            return [b"x"]
        if body == "twice":
            start_response("200 OK", [TEXT])
            start_response("200 OK", [TEXT])
        start_response("200 OK", [TEXT, ("Content-Length", "2")])
        return [b"long"]

    unchecked = {"no start": "bare"}.get(body)

    async def main() -> WSGIHarness:
        h = WSGIHarness(app)
        if unchecked:  # the validator itself refuses a body before start_response
            h.pool.app = app
        h.feed(request())
        await h.done()
        h.stop()
        return h

    with caplog.at_level(logging.ERROR, "prefork.http"):
        h = run(main())
    (response,) = h.responses("GET")
    assert response.status == 500 and h.transport.closed
    assert words in caplog.text


def test_a_body_short_of_its_length_closes_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [TEXT, ("Content-Length", "10")])
        return iter([b"short"])

    async def main() -> WSGIHarness:
        h = WSGIHarness(app)
        h.feed(request())
        await h.done()
        h.stop()
        return h

    h = run(main())
    assert h.out.endswith(b"\r\n\r\nshort") and h.transport.closed
    assert "shorter than its Content-Length" in caplog.text


def test_an_app_failing_mid_stream_closes_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [TEXT])

        def body() -> Iterator[bytes]:
            yield b"part"
            raise RuntimeError("mid-stream")

        return body()

    async def main() -> WSGIHarness:
        h = WSGIHarness(app)
        h.feed(request())
        await h.done()
        h.stop()
        return h

    h = run(main())
    assert h.out.startswith(b"HTTP/1.1 200 OK") and h.out.endswith(b"4\r\npart\r\n")
    assert h.transport.closed and "mid-stream" in caplog.text


# -- the request body -------------------------------------------------------------------------


def test_a_body_past_the_buffer_streams_in_with_reading_resumed() -> None:
    body = bytes(range(256)) * 300

    async def main() -> list[Any]:
        h = WSGIHarness(echo, high_water=None)
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        h.feed(head)
        for i in range(0, len(body), 20000):
            await h.until(lambda: h.transport.reading)
            h.feed(body[i : i + 20000])
        await h.done()
        h.stop()
        return h.responses("POST")

    (response,) = run(main())
    assert response.body == body


def test_a_chunked_upload_and_expect_continue() -> None:
    head = (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    )

    async def main() -> bytes:
        h = WSGIHarness(echo)
        h.feed(head)
        await h.until(lambda: b"100 Continue" in h.out)
        h.feed(b"3\r\nabc\r\n")
        await h.settle_loop()
        h.feed(b"2\r\nde\r\n0\r\n\r\n")
        await h.done()
        h.stop()
        return h.out

    out = run(main())
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert out.endswith(b"abcde")


def test_an_app_that_ignores_the_body_is_answered_and_the_rest_skipped() -> None:
    async def main() -> list[Any]:
        h = WSGIHarness(hello)
        h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        h.feed(b"a" * 70_000)  # past 64 KiB: the app starts
        await h.until(lambda: b"hello" in h.out)
        h.feed(b"b" * 30_000 + request())
        await h.done()
        await h.until(lambda: h.out.count(b"hello") == 2)
        h.stop()
        return h.responses("POST", "GET")

    first, second = run(main())
    assert first.body == second.body == b"hello"


def test_a_slow_body_holds_no_thread_until_64_kib_or_its_end() -> None:
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        ran.append(environ["PATH_INFO"])
        return echo(environ, start_response)

    async def main() -> tuple[WSGIHarness, Any]:
        h = WSGIHarness(app, threads=1)
        h.feed(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        other = h.connect()
        other.data_received(request("GET", "/other"))  # the only thread is free for it
        await h.until(lambda: b"HTTP/1.1 200" in other.transport.out)  # type: ignore[attr-defined]
        assert ran == ["/other"] and h.state.inflight == 1
        h.feed(b"defghij")
        await h.done(1)
        left = h.connect()  # a client that leaves before its body is whole: never run
        left.data_received(b"POST /left HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nab")
        left.transport.close()
        await h.done()
        h.stop()
        return h, left

    h, left = run(main())
    assert ran == ["/other", "/slow"] and h.responses("POST")[0].body == b"abcdefghij"
    assert h.state.inflight == 0 and left.transport.out == b""


def test_a_client_leaving_mid_body_releases_the_thread(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> WSGIHarness:
        h = WSGIHarness(echo)
        h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        h.feed(b"a" * 70_000)  # past 64 KiB: the app starts, reads, waits for more
        await h.until(lambda: any(c.waiting for c in h.pool._busy.values()))
        h.transport.close()  # the connection is lost
        await h.done()
        h.stop()
        return h

    with caplog.at_level(logging.DEBUG, "prefork.http"):
        h = run(main())
    assert h.out == b"" and "client went away" in caplog.text


def test_a_half_closed_client_is_still_answered() -> None:
    async def main() -> list[Any]:
        h = WSGIHarness(echo)
        h.feed(post(b"abc"))
        h.eof()
        await h.done()
        h.stop()
        return h.responses("POST")

    (response,) = run(main())
    assert response.body == b"abc"


def test_a_body_past_the_buffer_at_once_is_read_with_reading_resumed() -> None:
    body = b"z" * 150_000
    fed = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        fed.wait(10)  # the connection has paused reading by now
        return echo(environ, start_response)

    async def main() -> list[Any]:
        h = WSGIHarness(app)
        h.feed(post(body)[:100_000])
        assert not h.transport.reading
        fed.set()
        await h.until(lambda: h.transport.reading)
        h.feed(post(body)[100_000:])
        await h.done(1)
        h.stop()
        return h.responses("POST")

    (response,) = run(main())
    assert response.body == body


def test_no_100_continue_once_the_response_has_begun() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        write = start_response("200 OK", [TEXT])
        write(b"first ")
        return [environ["wsgi.input"].read(3)]

    async def main() -> bytes:
        h = WSGIHarness(app)
        h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        await h.until(lambda: b"first" in h.out)
        await h.until(lambda: not h.proto.cycle or not h.proto.cycle.expect_continue)  # type: ignore[attr-defined]
        h.feed(b"abc")
        await h.done(1)
        h.stop()
        return h.out

    out = run(main())
    assert b"100 Continue" not in out and out.endswith(b"first \r\n3\r\nabc\r\n0\r\n\r\n")


def test_more_than_the_content_length_closes_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [TEXT, ("Content-Length", "2")])
        return iter([b"ab", b"cd"])

    async def main() -> WSGIHarness:
        h = WSGIHarness(app)
        h.feed(request())
        await h.done()
        h.stop()
        return h

    h = run(main())
    assert h.out.endswith(b"\r\n\r\nab") and h.transport.closed
    assert caplog.text.count("Exception in WSGI application") == 1  # logged once
    assert "longer than its Content-Length" in caplog.text


def test_an_answer_ready_after_the_client_left_is_dropped() -> None:
    answer = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        answer.wait(10)
        start_response("200 OK", [TEXT])
        return [b"too late"]

    async def main() -> WSGIHarness:
        h = WSGIHarness(app)
        h.feed(request())
        await h.until(lambda: bool(h.pool._busy))
        cycle = h.proto.cycle
        assert isinstance(cycle, WSGICycle)
        h.transport.close()
        await h.settle_loop()
        answer.set()
        await h.done()
        # A chunk handed over just before the client left (a race the thread cannot see):
        assert cycle._write(b"x", None, True) is False
        h.stop()
        return h

    h = run(main())
    assert h.out == b""


def test_an_app_yielding_str_is_an_error() -> None:
    from prefork.http._wsgi import _bytes

    with pytest.raises(TypeError, match="must yield bytes, got str"):
        _bytes("text")


# -- bounds ------------------------------------------------------------------------------------


def test_a_client_that_does_not_read_holds_one_chunk_then_is_cut_at_body_timeout() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [TEXT])

        def body() -> Iterator[bytes]:
            try:
                for i in range(1000):
                    produced.append(i)
                    yield b"x" * 10_000
            finally:
                closed.set()

        return body()

    async def main() -> tuple[int, int]:
        h = WSGIHarness(app, high_water=30_000, options={"body_timeout": 5.0})
        h.feed(request())
        await h.until(lambda: h.proto.flow.write_paused)
        await h.settle_loop()
        held = len(produced)
        buffered = h.transport.buffered
        h.advance(6.0)
        h.state.sweep(h.loop.time())
        await h.done()
        h.stop()
        return held, buffered

    held, buffered = run(main())
    assert held <= 6 and buffered <= 50_000  # the mark, one chunk written, one made
    assert closed.is_set()


def test_a_client_that_reads_slowly_gets_the_whole_stream() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [TEXT, ("Content-Length", "200000")])
        return (b"y" * 10_000 for _ in range(20))

    async def main() -> bytes:
        h = WSGIHarness(app, high_water=30_000)
        h.feed(request())
        while h.state.inflight:
            await h.until(lambda: h.proto.flow.write_paused or not h.state.inflight)
            h.transport.client_reads()
            await h.settle_loop()
        h.stop()
        return h.out

    out = run(main())
    assert out.endswith(b"y" * 200_000)


def test_a_request_whose_client_left_while_queued_is_not_run() -> None:
    ran: list[str] = []
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        ran.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/hold":
            release.wait(10)
        start_response("200 OK", [TEXT])
        return [b""]

    async def main() -> None:
        h = WSGIHarness(app, threads=1)
        h.feed(request("GET", "/hold"))
        await h.until(lambda: bool(h.pool._busy))
        other = h.connect()
        other.data_received(request("GET", "/queued"))
        queued = other.cycle
        assert isinstance(queued, WSGICycle)
        other.transport.close()
        await h.settle_loop()
        inflight = h.state.inflight  # the queued request no longer counts
        queued.disconnect()  # told again (a second close): nothing more
        assert h.state.inflight == inflight
        release.set()
        await h.done()
        h.stop()

    run(main())
    assert ran == ["/hold"]


# -- stuck threads ------------------------------------------------------------------------------


def in_release_wait(h: WSGIHarness) -> bool:
    """Whether the pool's busy thread runs the line ``release.wait(...)`` of its app (not
    still on its way back from handing a chunk to the loop: its stack is logged)."""
    for thread in list(h.pool._busy):
        frame = sys._current_frames().get(thread.ident or 0)
        while frame is not None:
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
            if frame.f_code.co_name == "app" and "release.wait(" in line:
                return True
            frame = frame.f_back
    return False


@pytest.mark.parametrize("begun", [False, True])
def test_a_stuck_thread_is_answered_504_logged_and_replaced(
    caplog: pytest.LogCaptureFixture, begun: bool
) -> None:
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        write = start_response("200 OK", [TEXT])
        if environ["PATH_INFO"] == "/next":
            return [b"next"]
        if begun:
            write(b"begun")
        release.wait(10)
        return [b"late"]

    async def main() -> WSGIHarness:
        h = WSGIHarness(app, threads=1, timeout=3.0)
        h.feed(request())
        await h.until(lambda: in_release_wait(h) and (not begun or b"begun" in h.out))
        h.pool.check()
        assert h.retired == 0 and not h.transport.closed  # not yet
        h.clock.now += 3.0
        h.state.sweep(h.loop.time())
        h.pool.check()  # once only
        await h.settle_loop()
        assert h.retired == 1 and h.pool.stuck == 1 and len(h.pool.threads) == 2
        other = h.connect()  # the new thread serves
        other.data_received(request("GET", "/next"))
        await h.until(lambda: b"next" in other.transport.out)  # type: ignore[attr-defined]
        release.set()
        await h.done()
        h.stop()
        return h

    with caplog.at_level(logging.ERROR, "prefork.http"):
        h = run(main())
    if begun:
        assert h.out.endswith(b"5\r\nbegun\r\n") and h.transport.closed
    else:
        (response,) = h.responses("GET")
        assert response.status == 504 and response.body == b"Gateway Timeout\n"
    assert "for over 3s (--timeout)" in caplog.text and "release.wait(10)" in caplog.text
    assert b"late" not in h.out


def test_time_spent_waiting_for_the_client_is_not_the_apps() -> None:
    """--timeout counts the app's own time: a thread waiting for a slow body or a slow reader
    is bounded by --body-timeout, and its count starts again when the wait ends."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        data = environ["wsgi.input"].read(3)
        start_response("200 OK", [TEXT])
        return iter([data, b"x" * 50_000, b"end"])

    async def main() -> WSGIHarness:
        h = WSGIHarness(app, threads=1, timeout=3.0, high_water=10_000)
        h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        await h.until(lambda: any(c.waiting for c in h.pool._busy.values()))
        h.clock.now += 10.0  # waiting for the body
        h.pool.check()
        h.feed(b"abc")
        await h.until(lambda: h.proto.flow.write_paused)
        await h.until(lambda: any(c.waiting for c in h.pool._busy.values()))
        h.clock.now += 10.0  # waiting for the client to read
        h.pool.check()
        h.clock.now += 2.0  # the app's own time since: under 3 s
        assert h.pool.stuck == 0
        h.transport.client_reads()
        await h.done(1)
        h.pool.check()
        h.stop()
        return h

    h = run(main())
    assert h.pool.stuck == 0 and h.retired == 0 and h.out.endswith(b"3\r\nend\r\n0\r\n\r\n")


def test_a_pool_with_nobody_to_tell_still_answers_504() -> None:
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        release.wait(10)
        start_response("200 OK", [TEXT])
        return [b""]

    async def main() -> WSGIHarness:
        h = WSGIHarness(app, threads=1, timeout=1.0)
        h.pool._on_stuck = None
        h.feed(request())
        await h.until(lambda: bool(h.pool._busy))
        h.clock.now += 1.0
        h.pool.check()
        release.set()
        await h.done()
        h.stop()
        return h

    h = run(main())
    assert h.responses("GET")[0].status == 504 and h.retired == 0


def test_a_pool_without_timeout_never_gives_up() -> None:
    pool = WSGIPool(hello, {}, 1)
    pool.check()
    assert pool.stuck == 0 and thread_stack(None) == ""
    assert thread_stack(threading.Thread(target=lambda: None)) == ""


# -- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [("200", ValueError), ("2000 X", ValueError), ("20x OK", ValueError), (200, TypeError),
     ("200 A\r\nB", ValueError), ("200 A\x00B", ValueError), ("200 A\x7fB", ValueError),
     ("200 \u20ac", ValueError)],
)  # fmt: skip
def test_a_bad_status_is_refused(status: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_status(status)


@pytest.mark.parametrize(
    ("headers", "error"),
    [((), TypeError), ([["a", "b"]], TypeError), ([("a", "b", "c")], TypeError),
     ([("a", 1)], TypeError), ([("a", "b\r\nc: d")], ValueError), ([("a b", "c")], ValueError)],
)  # fmt: skip
def test_bad_headers_are_refused(headers: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        checked_headers(headers)


def test_good_status_and_headers() -> None:
    assert parse_status("404 NOT FOUND") == (404, b"NOT FOUND")  # Flask's: sent as given
    assert parse_status("200 ") == (200, b"") and parse_status("599 \tx\xe9") == (599, b"\tx\xe9")
    assert checked_headers([("X-A", "é")]) == [(b"X-A", "é".encode("latin-1"))]


def test_file_wrapper_reads_blocks_and_closes_with_the_file() -> None:
    f = io.BytesIO(b"abcdefg")
    wrapper = FileWrapper(f, 3)
    assert list(wrapper) == [b"abc", b"def", b"g"]
    wrapper.close()
    assert f.closed
    assert not hasattr(FileWrapper(b"no close"), "close")  # type: ignore[arg-type]


def test_a_file_wrapper_is_served_and_closed() -> None:
    f = io.BytesIO(b"0123456789" * 1000)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [TEXT])
        return environ["wsgi.file_wrapper"](f, 4096)

    (response,) = serve(app, request(), "GET")
    assert response.body == b"0123456789" * 1000 and f.closed


def test_base_environ_says_whether_threads_share_the_app() -> None:
    assert base_environ(threads=1)["wsgi.multithread"] is False
    assert base_environ(threads=4)["wsgi.multithread"] is True


def test_a_wsgi_cycle_is_the_state_cycle_type_only_with_a_pool() -> None:
    async def main() -> None:
        h = WSGIHarness(hello)
        assert h.state.cycle_type is WSGICycle
        h.stop()

    run(main())
    assert served_interface(hello, "auto") == "wsgi"


def test_a_websocket_upgrade_request_is_a_plain_request_to_a_wsgi_app() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("426 Upgrade Required", [TEXT])
        return [environ["HTTP_UPGRADE"].encode()]

    upgrade = request(
        "GET",
        "/",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    )
    (response,) = serve(app, upgrade, "GET")
    assert response.status == 426 and response.body == b"websocket"


def test_the_access_log_and_the_stats_count_wsgi_responses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> WSGIHarness:
        h = WSGIHarness(hello, options={"access_log": True})
        h.feed(request("GET", "/x"))
        await h.done(1)
        h.stop()
        return h

    with caplog.at_level(logging.INFO, "prefork.access"):
        h = run(main())
    assert '"GET /x HTTP/1.1" 200 5' in caplog.text
    assert h.state.stats.take(1, 0, 0) is not None


def test_a_thread_that_returns_after_the_loop_closed_ends_quietly() -> None:
    """A stuck thread abandoned by a worker that then ended comes back to a closed loop: its
    response has nobody to go to, and the thread must not die of ``RuntimeError`` (an
    unhandled exception in a thread, printed to stderr)."""
    release = threading.Event()
    errors: list[BaseException | None] = []

    def late(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        release.wait(10)
        start_response("200 OK", [TEXT, ("Content-Length", "4")])
        return [b"late"]

    async def main() -> WSGIHarness:
        h = WSGIHarness(late, threads=1)
        h.feed(request())
        await h.until(lambda: bool(h.pool._busy))
        return h

    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        h = run(main())  # the loop is closed now, the thread still in the app
        thread = h.pool.threads[0]
        h.stop()
        release.set()
        thread.join(10)
    finally:
        threading.excepthook = hook
    assert not thread.is_alive() and errors == []

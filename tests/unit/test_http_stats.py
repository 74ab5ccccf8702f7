"""The HTTP worker's metrics (``_stats.py``): what is counted for each kind of answer, the
gauges, the report's shape (checked against the documented one), when reports are sent."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import re
import socket
from typing import Any

import pytest
import uvloop
from _http_fakes import START, Harness, echo_app, gated_hello, hello_app, request, run
from _ws_fakes import WSHarness, upgrade
from wsproto.events import CloseConnection, TextMessage

from prefork.http import HTTPWorker
from prefork.http._stats import DURATION_BOUNDS, METHODS, Stats

try:  # the master's store, when it is there: it must refuse none of our samples
    from prefork.ops._metrics import MetricStore
except ImportError:  # written beside this module, may not be there yet
    MetricStore = None  # type: ignore[assignment,misc]

Report = dict[str, Any]

# -- the documented shape (the spec's section 1), and the HTTP worker's names (section 2) ------

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
#: name -> (type, label names)
_SERIES = {
    "prefork_http_requests_total": ("counter", {"method", "status"}),
    "prefork_http_refused_total": ("counter", {"status"}),
    "prefork_http_request_duration_seconds": ("histogram", set()),
    "prefork_http_requests_in_flight": ("gauge", set()),
    "prefork_http_connections": ("gauge", set()),
    "prefork_http_websockets": ("gauge", set()),
    "prefork_http_received_bytes_total": ("counter", set()),
    "prefork_http_sent_bytes_total": ("counter", set()),
}
_GAUGES = ("prefork_http_requests_in_flight", "prefork_http_connections", "prefork_http_websockets")


def _whole(value: Any) -> bool:
    return type(value) is int and value >= 0


def check_shape(body: Report) -> None:
    """Fail unless ``body`` is a report the master takes whole (spec section 1), with the
    HTTP worker's names and labels (section 2)."""
    json.dumps(body, allow_nan=False)  # what the frame codec sends
    assert set(body) == {"status", "metrics"}
    status = body["status"]
    assert set(status) == {"requests", "connections"}
    assert _whole(status["requests"]) and _whole(status["connections"])
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for sample in body["metrics"]:
        name, kind = sample["name"], sample["type"]
        assert _NAME.match(name) and len(name) <= 200
        assert _SERIES[name][0] == kind
        labels = sample.get("labels", {})
        assert set(labels) == _SERIES[name][1] and len(labels) <= 16
        for key, value in labels.items():
            assert _LABEL.match(key) and not key.startswith("__") and key not in ("broker", "le")
            assert type(value) is str and len(value) <= 200
        if "method" in labels:
            assert labels["method"] in (*METHODS, "other")
            assert re.fullmatch("[1-5]xx", labels["status"])
        elif "status" in labels:
            assert re.fullmatch("[1-5][0-9][0-9]", labels["status"])
        assert type(sample["help"]) is str and 0 < len(sample["help"]) <= 200
        series = (name, tuple(sorted(labels.items())))
        assert series not in seen
        seen.add(series)
        if kind == "histogram":
            assert set(sample) <= {"name", "type", "labels", "help", "buckets", "counts", "sum"}
            buckets, counts = sample["buckets"], sample["counts"]
            assert 0 < len(buckets) <= 32 and all(math.isfinite(b) for b in buckets)
            assert all(a < b for a, b in itertools.pairwise(buckets))
            assert len(counts) == len(buckets) + 1 and all(_whole(c) for c in counts)
            assert sum(counts) > 0 and math.isfinite(sample["sum"])  # sent only when observed
        else:
            assert set(sample) <= {"name", "type", "labels", "help", "value"}
            assert math.isfinite(sample["value"])
            if kind == "counter":
                assert sample["value"] > 0  # an increase; a zero one is not sent
    assert {name for name, _ in seen} >= set(_GAUGES)  # gauges go in every report
    if _STORE is not None:
        assert _STORE.report("http", 1, body["metrics"]) == []


#: One store for every report of the run: the bounds of a series may never change.
_STORE = MetricStore() if MetricStore is not None else None


def values(body: Report) -> dict[str, Any]:
    """``name`` or ``name{label=value,...}`` -> value (or the histogram's sample)."""
    out: dict[str, Any] = {}
    for sample in body["metrics"]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.get("labels", {}).items()))
        key = f"{sample['name']}{{{labels}}}" if labels else sample["name"]
        out[key] = sample if sample["type"] == "histogram" else sample["value"]
    return out


def listen(h: Harness) -> list[Report]:
    """The reports ``h``'s server state sends from now on."""
    reports: list[Report] = []
    h.state.report = reports.append
    return reports


def take(h: Harness, reports: list[Report]) -> Report:
    """Send a report now (something must have changed); its metrics by name, checked."""
    assert h.state.send_report()
    check_shape(reports[-1])
    return values(reports[-1])


def answers(report: dict[str, Any]) -> dict[str, Any]:
    """The requests and refusals of ``report``."""
    names = ("prefork_http_requests_total", "prefork_http_refused_total")
    return {k: v for k, v in report.items() if k.startswith(names)}


# -- requests by method and status class ---------------------------------------------------


async def status_from_path(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({**START, "status": int(scope["path"][1:])})
    await send({"type": "http.response.body", "body": b"x"})


def test_responses_are_counted_by_method_and_status_class() -> None:
    async def main() -> None:
        h = Harness(status_from_path)
        reports = listen(h)
        methods = [*METHODS, "PROPFIND", "BREW"]
        raw = b"".join(request(m, f"/{200 + i}") for i, m in enumerate(methods))
        h.feed(raw + request("GET", "/404") + request("GET", "/301") + request("POST", "/503"))
        await h.settle()
        assert len(h.responses(*methods, "GET", "GET", "POST")) == len(methods) + 3
        report = take(h, reports)
        assert answers(report) == {
            "prefork_http_requests_total{method=GET,status=2xx}": 1,
            "prefork_http_requests_total{method=HEAD,status=2xx}": 1,
            "prefork_http_requests_total{method=POST,status=2xx}": 1,
            "prefork_http_requests_total{method=PUT,status=2xx}": 1,
            "prefork_http_requests_total{method=DELETE,status=2xx}": 1,
            "prefork_http_requests_total{method=PATCH,status=2xx}": 1,
            "prefork_http_requests_total{method=OPTIONS,status=2xx}": 1,
            "prefork_http_requests_total{method=other,status=2xx}": 2,
            "prefork_http_requests_total{method=GET,status=4xx}": 1,
            "prefork_http_requests_total{method=GET,status=3xx}": 1,
            "prefork_http_requests_total{method=POST,status=5xx}": 1,
        }
        assert "prefork_http_refused_total{status=400}" not in report
        assert reports[-1]["status"] == {"requests": len(methods) + 3, "connections": 1}

    run(main())


def test_an_app_that_fails_is_a_5xx_request_and_not_a_refusal() -> None:
    async def main() -> None:
        async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
            raise RuntimeError("boom")

        h = Harness(failing)
        reports = listen(h)
        h.feed(request("DELETE"))
        await h.settle()
        assert [r.status for r in h.responses("DELETE")] == [500]
        report = take(h, reports)
        assert answers(report) == {"prefork_http_requests_total{method=DELETE,status=5xx}": 1}

    run(main())


def test_a_response_the_app_left_unfinished_is_not_counted() -> None:
    async def main() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send(START)
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            raise RuntimeError("boom")

        h = Harness(app)
        reports = listen(h)
        h.feed(request())
        await h.settle()
        assert h.transport.closed and h.out.endswith(b"part\r\n")
        report = take(h, reports)
        assert answers(report) == {} and "prefork_http_request_duration_seconds" not in report
        assert report["prefork_http_sent_bytes_total"] == len(h.out)

    run(main())


def test_a_method_the_app_took_out_of_the_scope_counts_as_other() -> None:
    async def main() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            del scope["method"]
            await hello_app(scope, receive, send)

        h = Harness(app)
        reports = listen(h)
        h.feed(request("GET"))
        await h.settle()
        assert take(h, reports)["prefork_http_requests_total{method=other,status=2xx}"] == 1

    run(main())


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "options", "status"),
    [
        (request("POST", "/", "Content-Length: 11", body=b"x" * 11), {}, 413),
        (request("GET", "/", "X-Big: " + "b" * 200), {"limit_request_field_size": 100}, 431),
        (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", {}, 400),
        (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n", {"limit_request_line": 100}, 414),
        # A chunked body over the limit in the bytes that came with the head: no app ran.
        (request("POST", "/", "Transfer-Encoding: chunked", body=b"b\r\n" + b"x" * 11), {}, 413),
        # h11 finds the trailer malformed as the request's cycle begins: no app ran either.
        (request("POST", "/", "Transfer-Encoding: chunked", body=b"0\r\nA B: c\r\n\r\n"), {}, 400),
    ],
)
def test_a_refused_request_is_counted_as_refused_not_as_a_request(
    raw: bytes, options: dict[str, Any], status: int
) -> None:
    async def main() -> None:
        h = Harness(echo_app(), {"limit_request_body": 10, **options})
        reports = listen(h)
        h.feed(raw)
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 %d " % status) and h.transport.closed
        report = take(h, reports)
        assert answers(report) == {f"prefork_http_refused_total{{status={status}}}": 1}
        assert report["prefork_http_sent_bytes_total"] == len(h.out)
        assert report["prefork_http_received_bytes_total"] == len(raw)

    run(main())


def test_timeouts_and_concurrency_refusals_are_counted_by_status() -> None:
    async def main() -> None:
        gate, app = gated_hello()
        h = Harness(app, {"limit_concurrency": 1})
        reports = listen(h)
        h.feed(request())
        await h.settle_loop()
        second = h.connect()
        second.data_received(request())  # over limit_concurrency
        third = h.connect()
        third.data_received(b"GET / HT")  # a head that never completes
        h.advance(h.config.header_timeout + 1)
        h.state.sweep(h.loop.time())
        gate.set()
        await h.settle()
        report = take(h, reports)
        assert answers(report) == {
            "prefork_http_refused_total{status=408}": 1,
            "prefork_http_refused_total{status=503}": 1,
            "prefork_http_requests_total{method=GET,status=2xx}": 1,
        }

    run(main())


def test_a_bad_body_after_the_app_started_is_that_requests_answer() -> None:
    async def main() -> None:
        h = Harness(echo_app())
        reports = listen(h)
        h.feed(request("PUT", "/", "Transfer-Encoding: chunked", body=b"3\r\nabc\r\n"))
        await h.settle_loop()
        h.feed(b"zz\r\n")  # not a chunk size
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 400 ")
        report = take(h, reports)
        assert report["prefork_http_requests_total{method=PUT,status=4xx}"] == 1
        assert "prefork_http_refused_total{status=400}" not in report

    run(main())


# -- the duration histogram ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [(0.0, 0), (0.005, 0), (0.0051, 1), (0.3, 6), (1.0, 7), (10.0, 10), (10.5, 11), (1e9, 11)],
)
def test_a_duration_goes_in_the_first_bucket_whose_bound_it_does_not_exceed(
    seconds: float, bucket: int
) -> None:
    stats = Stats()
    stats.responded("GET", 200, seconds)
    [histogram] = [s for s in stats.take(1, 0, 0)["metrics"] if s["type"] == "histogram"]  # type: ignore[index]
    assert histogram["buckets"] == list(DURATION_BOUNDS)
    assert histogram["counts"] == [int(i == bucket) for i in range(len(DURATION_BOUNDS) + 1)]
    assert histogram["sum"] == seconds


def frozen_clock(h: Harness) -> list[float]:
    """The clock requests are timed with, moved only by the test: what a busy machine adds
    between two steps must not move a request into another bucket."""
    now = [1000.0]
    h.state.clock = lambda: now[0]
    return now


def test_a_request_is_timed_from_its_head_to_its_last_byte() -> None:
    async def main() -> None:
        gate, app = gated_hello()
        h = Harness(app)
        clock = frozen_clock(h)
        reports = listen(h)
        h.feed(request())
        await h.settle_loop()
        clock[0] += 0.3
        gate.set()
        await h.settle()
        histogram = take(h, reports)["prefork_http_request_duration_seconds"]
        assert histogram["counts"] == [0] * 6 + [1] + [0] * 5  # 0.25 < 0.3 <= 0.5
        assert histogram["sum"] == pytest.approx(0.3)

    run(main())


def test_the_access_log_and_the_histogram_take_the_same_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        gate, app = gated_hello()
        h = Harness(app, {"access_log": True, "access_log_format": "%(L)s"})
        clock = frozen_clock(h)
        reports = listen(h)
        h.feed(request())
        await h.settle_loop()
        clock[0] += 0.02
        gate.set()
        await h.settle()
        histogram = take(h, reports)["prefork_http_request_duration_seconds"]
        assert histogram["counts"][2] == 1  # 0.01 < 0.02 <= 0.025
        [line] = [r.getMessage() for r in caplog.records if r.name == "prefork.access"]
        assert line == f"{histogram['sum']:.6f}"

    caplog.set_level(logging.INFO, logger="prefork.access")
    run(main())


# -- bytes ---------------------------------------------------------------------------------


async def streamed(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive())["more_body"]:
        pass
    await send(START)
    await send({"type": "http.response.body", "body": b"a" * 100_000, "more_body": True})
    await send({"type": "http.response.body", "body": b"b", "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(
    ("app", "raw"),
    [
        (hello_app, request() + request("HEAD")),
        (echo_app(), request("POST", "/", "Content-Length: 5", body=b"hello")),
        (echo_app(), request("POST", "/", "Expect: 100-continue", "Content-Length: 2") + b"hi"),
        (streamed, request("POST", "/", "Transfer-Encoding: chunked", body=b"0\r\n\r\n")),
    ],
)
def test_bytes_in_and_out_are_exact(app: Any, raw: bytes) -> None:
    async def main() -> None:
        h = Harness(app)
        reports = listen(h)
        h.feed(raw, "random")
        await h.settle()
        h.eof()
        await h.settle()
        assert h.transport.closed and b"HTTP/1.1 200 " in h.out
        report = take(h, reports)
        assert report["prefork_http_received_bytes_total"] == len(raw)
        assert report["prefork_http_sent_bytes_total"] == len(h.out)

    run(main())


# -- gauges --------------------------------------------------------------------------------


def gauges(report: dict[str, Any]) -> tuple[int, ...]:
    """In flight, HTTP connections, WebSockets."""
    return tuple(report[name] for name in _GAUGES)


def test_in_flight_and_connections_go_up_and_down() -> None:
    async def main() -> None:
        gate, app = gated_hello()
        h = Harness(app)
        reports = listen(h)
        second = h.connect()
        assert gauges(take(h, reports)) == (0, 2, 0)
        h.feed(request())
        second.data_received(request())
        await h.settle_loop()
        assert gauges(take(h, reports)) == (2, 2, 0)
        gate.set()
        await h.settle()
        assert gauges(take(h, reports)) == (0, 2, 0)
        h.eof()
        await h.settle()
        assert gauges(take(h, reports)) == (0, 1, 0)
        assert reports[-1]["status"] == {"requests": 2, "connections": 1}

    run(main())


def echo_ws(scope: dict[str, Any], receive: Any, send: Any) -> Any:
    async def app() -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({**message, "type": "websocket.send"})

    return app()


def test_a_websocket_is_counted_from_its_accept_to_its_close() -> None:
    async def main() -> None:
        h = WSHarness(echo_ws)
        reports = listen(h)
        head = await h.open()
        report = take(h, reports)
        assert gauges(report) == (1, 0, 1)  # its app runs; it is no HTTP connection now
        assert reports[-1]["status"] == {"requests": 1, "connections": 1}
        assert report["prefork_http_requests_total{method=GET,status=1xx}"] == 1
        assert h.client is not None
        frames = h.client.send(TextMessage("hi"))
        h.feed(frames)
        await h.until(lambda: len(h.out) > len(head) + 4)
        assert [type(e) for e in h.events()] == [TextMessage]  # the echo
        frames += (close := h.client.send(CloseConnection(1000)))
        h.feed(close)
        await h.settle()
        assert [type(e) for e in h.events()] == [CloseConnection]
        assert h.transport.closed
        report = take(h, reports)
        assert gauges(report) == (0, 0, 0)
        assert reports[-1]["status"] == {"requests": 1, "connections": 0}
        sent = sum(r["prefork_http_sent_bytes_total"] for r in map(values, reports))
        received = sum(r["prefork_http_received_bytes_total"] for r in map(values, reports))
        assert sent == len(h.out)
        assert received == len(upgrade("/chat?x=1")) + len(frames)

    run(main())


@pytest.mark.parametrize("answer", ["close", "deny", "return"])
def test_a_websocket_handshake_answered_otherwise_is_a_get_of_that_status(answer: str) -> None:
    async def main() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            if answer == "close":
                await send({"type": "websocket.close"})
            elif answer == "deny":
                await send({"type": "websocket.http.response.start", "status": 401})
                await send({"type": "websocket.http.response.body", "body": b"no"})

        h = WSHarness(app)
        reports = listen(h)
        h.feed(upgrade())
        await h.settle()
        status = {"close": 403, "deny": 401, "return": 500}[answer]
        assert [r.status for r in h.responses("GET")] == [status] and h.transport.closed
        report = take(h, reports)
        assert answers(report) == {
            f"prefork_http_requests_total{{method=GET,status={status // 100}xx}}": 1
        }
        assert gauges(report) == (0, 0, 0)
        assert report["prefork_http_sent_bytes_total"] == len(h.out)

    run(main())


def test_a_refused_upgrade_is_a_refusal() -> None:
    async def main() -> None:
        h = WSHarness(echo_ws)
        reports = listen(h)
        h.feed(upgrade(version="12"))
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 426 ")
        report = take(h, reports)
        assert answers(report) == {"prefork_http_refused_total{status=426}": 1}

    run(main())


# -- when reports are sent -----------------------------------------------------------------


def test_increments_start_again_from_zero_and_nothing_unchanged_is_sent() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        reports = listen(h)
        h.feed(request())
        await h.settle()
        first = take(h, reports)
        assert first["prefork_http_requests_total{method=GET,status=2xx}"] == 1
        assert not h.state.send_report()  # nothing happened since
        part = b"GET / HTTP/1.1\r\n"
        h.feed(part)  # bytes in, nothing else
        second = take(h, reports)
        assert second == {
            "prefork_http_requests_in_flight": 0,
            "prefork_http_connections": 1,
            "prefork_http_websockets": 0,
            "prefork_http_received_bytes_total": len(part),
        }
        assert reports[-1]["status"] == {"requests": 1, "connections": 1}
        h.feed(b"Host: t\r\n\r\n")
        await h.settle()
        third = take(h, reports)
        assert third["prefork_http_requests_total{method=GET,status=2xx}"] == 1
        assert third["prefork_http_request_duration_seconds"]["counts"][0] == 1
        assert third["prefork_http_sent_bytes_total"] == len(h.out) // 2
        assert not h.state.send_report() and len(reports) == 3

    run(main())


def test_without_a_report_callable_nothing_is_taken() -> None:
    async def main() -> None:
        h = Harness(hello_app)
        h.feed(request())
        await h.settle()
        assert not h.state.send_report()
        assert h.state.stats.received == len(request())  # still counted, kept for later

    run(main())


def test_the_sweep_reports_about_once_a_second_and_only_changes() -> None:
    async def main() -> None:
        h = Harness(hello_app, {"keep_alive": 0.4})  # sweeps every 0.1 s
        state = h.state
        reports = listen(h)

        def tick() -> int:
            state._tick()
            state.stop_sweeping()  # its next tick comes when the test says
            return len(reports)

        assert state.sweep_interval == pytest.approx(0.1)
        assert tick() == 1  # the first: zeros, so that the master knows this worker's status
        assert reports[0]["status"] == {"requests": 0, "connections": 1}
        h.feed(request())
        await h.settle()
        assert tick() == 1  # too soon
        h.advance(0.5)
        assert tick() == 1
        h.advance(0.5)
        assert tick() == 2
        assert values(reports[1])["prefork_http_requests_total{method=GET,status=2xx}"] == 1
        h.advance(1.0)
        assert tick() == 2  # nothing changed
        h.feed(request())
        await h.settle()
        h.advance(0.1)
        assert tick() == 3  # a second after the last report

    run(main())


def test_a_report_that_raises_does_not_stop_the_sweep() -> None:
    async def main() -> None:
        h = Harness(hello_app)

        def broken(body: Report) -> None:
            raise OSError("the master is gone")

        h.state.report = broken
        with pytest.raises(OSError):
            h.state._tick()
        assert h.state._sweeper is not None
        h.state.stop_sweeping()

    run(main())


def test_the_worker_reports_once_more_at_the_end_of_its_drain() -> None:
    frames: list[tuple[str, Any]] = []

    class Channel:
        def send_frame(self, kind: str, body: Any = None) -> None:
            frames.append((kind, body))

    def get(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(request("GET", "/", "Connection: close"))
            data = b""
            while chunk := c.recv(65536):
                data += chunk
            return data

    async def main() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        options = {"app": hello_app, "lifespan": "off"}
        worker = HTTPWorker(
            type="http", id=1, generation=1, sockets=[sock], options=options, channel=Channel()
        )
        worker._exit = asyncio.get_running_loop().create_future()
        await worker.init()
        assert worker.state is not None
        worker.state._report_at = float("inf")  # no report before the drain's
        answer = await asyncio.to_thread(get, sock.getsockname()[1])
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert frames == []
        await worker.prepare_for_shutdown()
        [(kind, body)] = frames
        assert kind == "report"
        check_shape(body)
        report = values(body)
        assert report["prefork_http_requests_total{method=GET,status=2xx}"] == 1
        assert report["prefork_http_sent_bytes_total"] == len(answer)
        assert gauges(report) == (0, 0, 0)
        assert body["status"] == {"requests": 1, "connections": 0}

    uvloop.run(main())

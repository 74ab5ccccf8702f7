"""Issue 23, numbers to trust: requests in flight at the end are unanswered (with their wait up
to the end), sends never made are dropped, a late send is counted, connection set-up is its
own figure, two answers to one request are flagged, a scenario honours --rate and counts a
failed assert once, https with --insecure, the microsecond timer, the HdrHistogram codec's
refusals, --start-at, and the worker's run duration. Timing-dependent turns are driven
directly (fake transports, explicit times)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest
import trustme
import uvloop
from test_load_client import (
    HELLO,
    Answer,
    Constant,
    FakeTally,
    FakeTransport,
    Server,
    always,
    closed_loop,
    run,
)

from prefork.load import LoadConfig, _hdr, _timer
from prefork.load._client import _ClosedRun, _Conn, _LogOnce
from prefork.load._config import DurationError, parse_start_at
from prefork.load._openloop import _OpenRun, run_open
from prefork.load._scenario import Client, _ClientConn
from prefork.load._scenario_run import run_scenario
from prefork.load._target import Target
from prefork.load._worker import LoadWorker


def never(n: int, request: bytes) -> Answer:
    return Answer()  # no answer at all


# the end of a run


def test_a_closed_loops_requests_in_flight_at_the_end_are_unanswered() -> None:
    _, tally = run(lambda: closed_loop(never, connections=2, seconds=0.2, timeout=5.0))
    assert tally.records == [] and tally.errors == []
    assert [sent for _, sent in tally.unanswered_at_end] == [True, True]
    assert all(150_000 <= latency <= 260_000 for latency, _ in tally.unanswered_at_end)
    assert tally.sent == 2 and len(tally.connects) == 2


def test_an_open_loops_stall_at_the_end_counts_every_request_due() -> None:
    async def main() -> FakeTally:
        server = await Server(lambda n, r: Answer(HELLO) if n < 2 else Answer()).start()
        tally = FakeTally()
        start = time.monotonic()
        # 100/s for 0.3 s on 2 connections: 2 answered, 2 stall, the other 26 never leave
        await run_open(Target(server.url()), 2, Constant(100, start), start + 0.3, tally, timeout=5)
        await server.stop()
        return tally

    tally = run(main)
    assert len(tally.records) == 2 and tally.errors == []
    sent = [latency for latency, was_sent in tally.unanswered_at_end if was_sent]
    dropped = [latency for latency, was_sent in tally.unanswered_at_end if not was_sent]
    assert len(sent) == 2 and tally.sent == 4
    assert 2 + len(sent) + len(dropped) == 30  # every send due by the end
    assert max(sent) >= 250_000 and min(dropped) < 20_000  # their wait runs up to the end


def test_an_answer_or_a_close_past_the_deadline_is_unanswered() -> None:
    async def main() -> FakeTally:
        tally = FakeTally()
        run_ = _ClosedRun(Target("http://h/"), 1, time.monotonic() + 9, tally, 1.0, None)
        run_.holding = False  # past the warm-up
        late = _Conn(run_)
        late.connection_made(FakeTransport())
        late.intended_ns = time.monotonic_ns() - 10_000_000
        run_.deadline_ns = late.intended_ns + 5_000_000  # 5 ms after its send, passed
        late.data_received(HELLO)  # the deadline passed before it came: not a record
        closed = _Conn(run_)
        closed.connection_made(FakeTransport())
        closed.intended_ns = run_.deadline_ns - 7_000_000
        closed.busy = True
        closed.connection_lost(None)  # a close after the deadline: unanswered
        run_.end(run_.deadline_ns)
        run_.end(run_.deadline_ns)  # counted once
        late.data_received(HELLO)  # bytes read before its abort: left alone
        return tally

    tally = run(main)
    assert tally.records == [] and tally.errors == []
    assert tally.unanswered_at_end == [(7_000, True), (5_000, True)]


def test_an_answer_to_no_request_and_two_answers_to_one_are_flagged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> FakeTally:
        tally = FakeTally()
        run_ = _ClosedRun(Target("http://h/"), 1, time.monotonic() + 9, tally, 1.0, None)
        run_.holding = False  # past the warm-up
        idle = _Conn(run_)
        idle.connection_made(t1 := FakeTransport())
        idle.busy = False
        idle.data_received(HELLO)
        twice = _Conn(run_)
        twice.connection_made(t2 := FakeTransport())
        twice.data_received(HELLO + HELLO)
        assert t1.closing and t2.closing and len(t2.written) == 1  # no next request on it
        return tally

    with caplog.at_level(logging.WARNING, logger="prefork.load"):
        tally = run(main)
    assert len(tally.records) == 1 and tally.errors == ["read", "read"]
    assert tally.messages == ["h answered no request", "h answered one request twice"]


def test_a_send_leaving_late_is_counted() -> None:
    class Due:
        start = 0.0

        def due(self, now: float) -> int:
            return 2

        def intended(self, k: int) -> float:
            return 0.0 if k == 0 else 1e9  # the first is long due, the second far off

    async def main() -> FakeTally:
        tally = FakeTally()
        run_ = _OpenRun(Target("http://h/"), 1, Due(), time.monotonic() + 9, tally, 1.0, None)
        run_.holding = False  # past the warm-up
        conn = _Conn(run_)
        conn.transport = transport = FakeTransport()  # type: ignore[assignment]
        conn._write = transport.write
        run_.waiting.append(conn)
        run_.pump(time.monotonic_ns())
        run_.stop()
        return tally

    tally = run(main)
    assert (tally.late, tally.sent) == (1, 1)


def test_a_connect_timeout_says_why() -> None:
    async def main() -> list[str]:
        tally = FakeTally()
        run_ = _ClosedRun(Target("http://h/"), 1, time.monotonic() + 9, tally, 0.25, None)
        run_.holding = False  # past the warm-up

        async def hangs(conn: Any) -> None:
            raise TimeoutError

        run_._open = hangs  # type: ignore[method-assign]
        slot = asyncio.ensure_future(run_._slot())
        await asyncio.sleep(0.005)
        slot.cancel()
        await asyncio.gather(slot, return_exceptions=True)
        return tally.messages

    assert run(main)[0] == "cannot connect to h: no connection within 0.25 s"


def test_each_message_is_counted_and_at_most_100_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tally = FakeTally()
    log = _LogOnce(tally)
    with caplog.at_level(logging.WARNING, logger="prefork.load"):
        for i in range(150):
            log(f"failure {i}")
        log("failure 0")
    assert len(tally.messages) == 151 and len(caplog.records) == 100


# the microsecond timer


def test_the_timer_fires_at_its_time_and_can_be_moved_or_disarmed() -> None:
    async def main() -> list[int]:
        fired: list[int] = []
        loop = asyncio.get_running_loop()
        timer = _timer.PreciseTimer(loop, lambda: fired.append(time.monotonic_ns()))
        at = time.monotonic_ns() + 3_000_000
        timer.at(at)
        while not fired:
            await asyncio.sleep(0.001)
        assert fired[0] >= at
        timer.at(time.monotonic_ns() + 10**9)
        timer.cancel()
        timer._fire()  # woken for a time it no longer has: nothing happens
        await asyncio.sleep(0.01)
        timer.close()
        timer.close()
        return fired

    assert len(run(main)) == 1


def test_a_timer_the_kernel_refuses_is_an_oserror() -> None:
    ctypes.set_errno(24)
    with pytest.raises(OSError, match="timerfd_create: Too many open files"):
        _timer._check(-1, "timerfd_create")


# the HdrHistogram codec refuses what it cannot read


def _wrap(inner: bytes, cookie: int = 0x1C849314) -> str:
    import base64
    import struct
    import zlib

    deflated = zlib.compress(inner)
    return base64.b64encode(struct.pack(">ii", cookie, len(deflated)) + deflated).decode()


def _payload(header: tuple[Any, ...], body: bytes) -> bytes:
    import struct

    return struct.pack(">iiiiqqd", *header) + body


GOOD = (0x1C849313, 0, 0, 2, 1, 1000, 1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!", "is base64"),
        ("AAAA", "too short"),
        (_wrap(b"", cookie=0x1C849301), "not a compressed V2"),
        (
            __import__("base64").b64encode(b"\x1c\x84\x93\x14\x00\x00\x00\x02xx").decode(),
            "does not inflate",
        ),
        (_wrap(b"abc"), "without its header"),
        (_wrap(_payload((0x1C849303, 0, 0, 2, 1, 1000, 1.0), b"")), "not a V2 HdrHistogram"),
        (_wrap(_payload((0x1C849313, 0, 0, 3, 1, 1000, 1.0), b"")), "3 significant digits"),
        (_wrap(_payload((0x1C849313, 1, 0, 2, 1, 1000, 1.0), b"\x80")), "a cut number"),
        (_wrap(_payload((0x1C849313, 10, 0, 2, 1, 1000, 1.0), b"\xff" * 10)), r"beyond 2\*\*63"),
        (_wrap(_payload((0x1C849313, 3, 0, 2, 1, 1000, 1.0), b"\x81\x80\x01")), r"beyond 2\*\*63"),
    ],
)
def test_the_hdr_codec_refuses_what_it_cannot_read(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _hdr.decode(text)


def test_the_hdr_codec_reads_a_ninth_byte_and_zero_counts() -> None:
    big = bytearray()
    _hdr._varint(big, 1 << 60)
    body = bytes(big) + b"\x00\x02"  # a count of 2**60, a zero count, a count of 1
    text = _wrap(_payload((0x1C849313, len(body), 0, 2, 1, 1000, 1.0), body))
    assert _hdr.decode(text) == {0: 1 << 60, 2: 1}


# scenarios


async def _scenario_server() -> Server:
    return await Server(
        lambda n, r: (
            Answer(b"HTTP/1.1 500 No\r\nContent-Length: 0\r\n\r\n")
            if b"/fail" in r
            else Answer(HELLO, after=0.2 if b"/slow" in r else 0.0)
        )
    ).start()


def test_a_scenario_honours_a_rate() -> None:
    async def main() -> FakeTally:
        server = await _scenario_server()
        tally = FakeTally()

        async def scenario(client: Client) -> None:
            await client.request()

        start = time.monotonic()
        await run_scenario(
            scenario,
            Target(server.url()),
            4,
            start + 0.5,
            tally,
            timeout=1.0,
            schedule=Constant(40, start + 0.01),
        )
        await server.stop()
        return tally

    tally = run(main)
    assert 19 <= len(tally.records) <= 21 and tally.errors == []  # 40/s for 0.5 s, not more


def test_a_scenario_at_a_rate_behind_its_schedule_counts_late_and_dropped() -> None:
    async def main() -> FakeTally:
        server = await _scenario_server()
        tally = FakeTally()

        async def slow(client: Client) -> None:
            await client.request(path="/slow")

        start = time.monotonic()
        await run_scenario(
            slow,
            Target(server.url()),
            1,
            start + 0.5,
            tally,
            timeout=1.0,
            schedule=Constant(20, start),
        )
        await server.stop()
        return tally

    tally = run(main)
    # one client, 0.2 s a request: 0, 0.2 (late) and 0.4 (late) leave; 3 are in the records
    # or in flight at the end; the other sends due by 0.5 s never started
    assert tally.late >= 2
    started = len(tally.records) + sum(sent for _, sent in tally.unanswered_at_end)
    dropped = [latency for latency, sent in tally.unanswered_at_end if not sent]
    assert started + len(dropped) == 10
    assert tally.records[0][1] >= 190_000  # from its intended start


def test_a_failed_assert_after_a_failed_request_is_one_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> FakeTally:
        server = await _scenario_server()
        tally = FakeTally()

        async def checks(client: Client) -> None:
            response = await client.request(path="/fail")
            assert response.status == 200, "not ok"

        async def asserts_alone(client: Client) -> None:
            await client.request()
            raise AssertionError("wrong body")

        for scenario in (checks, asserts_alone):
            await run_scenario(
                scenario, Target(server.url()), 1, time.monotonic() + 0.05, tally, timeout=1.0
            )
        await server.stop()
        return tally

    with caplog.at_level(logging.WARNING, logger="prefork.load"):
        tally = run(main)
    fails = [r for r in tally.records if r[0] == 500]
    oks = [r for r in tally.records if r[0] == 200]
    assert tally.errors.count("read") == len(oks)  # only the assert after a 200 counts
    assert fails and tally.errors.count("read") + len(fails) == len(tally.records)


def test_an_answer_arriving_as_its_request_is_given_up_is_not_counted() -> None:
    """The run's end cancels a request, and its answer is read before the request's task
    runs again: the answer is dropped (the request is unanswered), not flagged as an answer
    to no request. Deterministic: a task's cancel() cancels the future it awaits at once."""

    async def main() -> FakeTally:
        tally = FakeTally()
        client = Client(Target("http://h/"), tally, timeout=1.0)
        conn = _ClientConn(client)
        conn.connection_made(FakeTransport())
        exchange = asyncio.ensure_future(conn.exchange(b"GET / HTTP/1.1\r\n\r\n", False))
        await asyncio.sleep(0)
        exchange.cancel()
        conn.data_received(HELLO)  # before the task sees its cancellation
        await asyncio.gather(exchange, return_exceptions=True)
        return tally

    tally = run(main)
    assert tally.records == [] and tally.errors == [] and tally.messages == []
    assert len(tally.unanswered_at_end) == 1


def test_a_scenarios_answer_past_the_deadline_is_unanswered() -> None:
    async def main() -> FakeTally:
        tally = FakeTally()
        client = Client(Target("http://h/"), tally, timeout=1.0, deadline=time.monotonic() - 1)
        conn = _ClientConn(client)
        conn.connection_made(FakeTransport())
        exchange = asyncio.ensure_future(conn.exchange(b"GET / HTTP/1.1\r\n\r\n", False))
        await asyncio.sleep(0)
        conn.data_received(HELLO)
        await exchange
        # answered, then cancelled before it could return: counted once (as unanswered)
        conn2 = _ClientConn(client)
        conn2.connection_made(FakeTransport())
        exchange = asyncio.ensure_future(conn2.exchange(b"GET / HTTP/1.1\r\n\r\n", False))
        await asyncio.sleep(0)
        conn2.data_received(HELLO)
        exchange.cancel()
        await asyncio.gather(exchange, return_exceptions=True)
        conn2.data_received(HELLO)  # aborted: bytes read before the abort are left alone
        conn3 = _ClientConn(client)
        conn3.connection_made(FakeTransport())
        conn3.data_received(HELLO)  # an answer to no request: flagged, the connection dropped
        conn3._fail("read", "gone")  # nothing waits: nothing more is counted
        return tally

    tally = run(main)
    assert tally.records == [] and len(tally.unanswered_at_end) == 2
    assert [(name, failed) for name, _, failed in tally.steps] == [("", False)] * 2
    assert tally.errors == ["read"] and tally.messages == ["h answered no request"]


# https


@pytest.fixture(scope="module")
def tls_server() -> Callable[[], Any]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    async def start() -> Server:
        server = Server(always(Answer(HELLO)))
        loop = asyncio.get_running_loop()
        from test_load_client import _ServerConn

        server._server = await loop.create_server(
            lambda: _ServerConn(server), "127.0.0.1", 0, ssl=context
        )
        server.port = server._server.sockets[0].getsockname()[1]
        return server

    return start


def test_https_with_insecure_loads_a_self_signed_server(tls_server: Callable[[], Any]) -> None:
    async def main() -> tuple[FakeTally, FakeTally]:
        server = await tls_server()
        url = f"https://127.0.0.1:{server.port}/"
        insecure, checked = FakeTally(), FakeTally()
        for tally, target in ((insecure, Target(url, insecure=True)), (checked, Target(url))):
            start = time.monotonic()
            await run_open(target, 1, Constant(50, start), start + 0.2, tally, timeout=1.0)
        client = Client(Target(url, insecure=True), insecure, timeout=1.0)
        assert (await client.request()).body == b"hello"
        await client.close()
        await server.stop()
        return insecure, checked

    insecure, checked = run(main)
    assert len(insecure.records) >= 9 and insecure.errors == []
    assert checked.records == [] and set(checked.errors) == {"connect"}
    assert "CERTIFICATE_VERIFY_FAILED" in checked.messages[0]


def test_https_targets() -> None:
    target = Target("https://example.com/x")
    assert (target.port, target.authority, target.tls["server_hostname"]) == (
        443,
        "example.com",
        "example.com",
    )
    assert target.tls["ssl"].verify_mode == ssl.CERT_REQUIRED
    assert Target("https://h:8443/").authority == "h:8443"
    assert Target("http://h/").tls == {}
    assert Target("https://h/", insecure=True).tls["ssl"].verify_mode == ssl.CERT_NONE


# --start-at and the worker


@pytest.mark.parametrize(
    ("word", "when"),
    [
        ("1765000000", 1765000000.0),
        ("1765000000.5", 1765000000.5),
        ("2026-12-06T10:00:00Z", 1796551200.0),
        ("2026-12-06T11:00:00+01:00", 1796551200.0),
    ],
)
def test_start_at_times(word: str, when: float) -> None:
    assert parse_start_at(word) == when


def test_start_at_from_now() -> None:
    assert abs(parse_start_at("+30s") - (time.time() + 30)) < 1


@pytest.mark.parametrize("word", ["2026-12-06T10:00:00", "tomorrow", "+soon", "-5"])
def test_bad_start_at_times(word: str) -> None:
    with pytest.raises(DurationError, match="is not a time like"):
        parse_start_at(word)


class Channel:
    def __init__(self) -> None:
        self.frames: list[tuple[str, Any]] = []

    def send_frame(self, kind: str, body: Any = None) -> None:
        self.frames.append((kind, body))


def test_a_worker_waits_for_start_at_and_reports_the_runs_own_duration(tmp_path: Any) -> None:
    channel = Channel()
    (tmp_path / "scen_rate.py").write_text(
        "async def run(client):\n    await client.request('GET', '/')\n"
    )

    async def main() -> tuple[float, float]:
        server = await Server(always(Answer(HELLO))).start()
        config = LoadConfig(
            url=server.url(),
            connections=2,
            duration=0.3,
            rate=50.0,
            scenario="scen_rate:run",
            start_at=time.time() + 0.3,
        )
        w = LoadWorker(
            type="load",
            id=1,
            generation=1,
            sockets=[],
            options={"load": config, "parts": 1},
            channel=channel,
        )
        begun = time.monotonic()
        await w.init()
        await asyncio.wait_for(w._driver, 5)
        await server.stop()
        return begun, server.received

    os.sys.path.insert(0, str(tmp_path))  # type: ignore[attr-defined]
    try:
        _, received = uvloop.run(main())
    finally:
        os.sys.path.remove(str(tmp_path))  # type: ignore[attr-defined]
    [done] = [body for kind, body in channel.frames if kind == "msg"]
    assert done["done"] == pytest.approx(0.3, abs=0.02)  # the run's, not the teardown's
    assert 14 <= received <= 16  # 50/s for 0.3 s, after the wait


# the warm-up: connection set-up is not the requests' latency


def test_the_first_sends_wait_for_every_connection_and_the_deadline_moves() -> None:
    async def main() -> tuple[float, FakeTally, float]:
        server = await Server(always(Answer(HELLO))).start()
        tally = FakeTally()
        run_ = _ClosedRun(Target(server.url()), 2, time.monotonic() + 0.2, tally, 1.0, None)
        opened = run_._open
        slow = [True]

        async def open_(conn: Any) -> None:
            if slow.pop() if slow else False:
                await asyncio.sleep(0.15)  # one connection takes 150 ms to set up
            await opened(conn)

        run_._open = open_  # type: ignore[method-assign]
        began = time.monotonic()
        shift = await run_.serve()
        await server.stop()
        return shift, tally, time.monotonic() - began

    shift, tally, took = run(main)
    assert 0.14 <= shift <= 0.25 and took >= 0.34  # 0.2 s of run after the warm-up
    assert all(latency < 100_000 for _, latency, _ in tally.records)  # no set-up in them
    assert len(tally.connects) == 2


def test_an_open_loops_schedule_waits_for_the_warm_up_at_most_the_timeout() -> None:
    async def main() -> tuple[float, FakeTally, Constant, float]:
        tally = FakeTally()
        start = time.monotonic()
        schedule = Constant(100, start)
        run_ = _OpenRun(Target("http://h/"), 1, schedule, start + 0.1, tally, 0.1, None)

        async def hangs(conn: Any) -> None:
            await asyncio.sleep(10)

        run_._open = hangs  # type: ignore[method-assign]
        return await run_.serve(), tally, schedule, start

    shift, tally, schedule, start = run(main)
    assert 0.09 <= shift <= 0.2 and schedule.start == start + shift  # the schedule moved
    assert tally.sent == 0 and len(tally.unanswered_at_end) >= 9  # all due, none could leave


def test_a_connection_parked_in_the_warm_up_and_closed_is_left_alone() -> None:
    async def main() -> FakeTally:
        tally = FakeTally()
        run_ = _ClosedRun(Target("http://h/"), 1, time.monotonic() + 9, tally, 1.0, None)
        conn = _Conn(run_)
        conn.connection_made(transport := FakeTransport())
        assert run_.parked == [conn] and transport.written == []
        run_.closed(conn)
        run_.begin(0.0)
        assert transport.written == [] and not run_.holding
        return tally

    assert run(main).sent == 0

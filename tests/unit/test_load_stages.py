"""Load shapes (``--stages``): the level between stages, the open loop's staged schedule (exact:
send k when the integral of the rate reaches k, shared over workers without a send lost), the
options, and the closed loop's ramp of connections."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_load_client import HELLO, Answer, FakeTally, Server, run

from prefork.cli import main
from prefork.core._options import ConfigError
from prefork.load import LoadConfig
from prefork.load._config import parse_stages
from prefork.load._ramp import _RampedRun, run_ramped
from prefork.load._stages import MAX_STAGES, StagedSchedule, Stages, split_level
from prefork.load._target import Target

SHAPE = ((10.0, 100.0), (30.0, 1000.0), (10.0, 0.0))  # '10s:100,30s:1000,10s:0'


def test_the_level_goes_linearly_to_each_target() -> None:
    s = Stages(0, SHAPE)
    assert [s.level(t) for t in (-1, 0, 5, 10, 25, 40, 45, 50, 60)] == [
        0.0, 0.0, 50.0, 100.0, 550.0, 1000.0, 500.0, 0.0, 0.0,
    ]  # fmt: skip
    assert (s.length, s.total) == (50.0, 500.0 + 16_500.0 + 5_000.0)


def test_send_k_is_when_the_integral_of_the_rate_reaches_k() -> None:
    s = Stages(0, ((10.0, 100.0),))  # the integral is 5 t**2
    assert [s.time_of(a) for a in (0, 5, 20, 125, 500)] == [0.0, 1.0, 2.0, 5.0, 10.0]
    assert s.time_of(500.5) == math.inf
    constant = Stages(4, ((10.0, 4.0),))  # a constant rate: k / rate, as RateSchedule
    assert [constant.time_of(k) for k in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    down = Stages(100, ((10.0, 0.0),))  # 100 t - 5 t**2
    assert down.time_of(500) == 10.0 and down.time_of(375) == pytest.approx(5.0)


def test_a_stage_at_zero_sends_nothing_and_is_passed() -> None:
    s = Stages(0, ((1.0, 0.0), (1.0, 2.0)))
    assert s.time_of(0) == 0.0  # the first send is at the start, as RateSchedule's
    assert s.time_of(0.5) == pytest.approx(1 + math.sqrt(0.5))
    pause = Stages(2, ((1.0, 0.0), (1.0, 0.0), (1.0, 2.0)))
    assert pause.time_of(1) == 1.0  # reached at the end of the ramp down, not of the pause
    assert pause.time_of(1.25) == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("level", "shape", "start", "now"),
    [
        (7.0, ((1.0, 14.0),), 0.0, 0.7320508075688773),  # the integral rounds up: one fewer
        (7.0, ((0.7, 7.0),), 1000.3, 1000.4428571428571),  # it rounds down: one more
    ],
)
def test_due_is_settled_against_intended_where_rounding_differs(
    level: float, shape: Any, start: float, now: float
) -> None:
    schedule = StagedSchedule(Stages(level, shape), start)
    n = schedule.due(now)
    assert schedule.intended(n - 1) <= now < schedule.intended(n)


def test_the_example_shape_sends_its_integral_exactly() -> None:
    schedule = StagedSchedule(Stages(0, SHAPE), start=1000.0)
    assert schedule.count == 22_000
    assert schedule.due(999.0) == 0 and schedule.due(1000.0) == 1
    assert schedule.due(1010.0 - 1e-9) == 500  # the first stage: 5 t**2 up to 10 s
    assert schedule.due(1040.0 - 1e-9) == 17_000
    assert schedule.due(1050.0) == schedule.due(1e9) == 22_000
    assert schedule.intended(21_999) < 1050.0 and schedule.intended(22_000) == math.inf
    assert [round(schedule.due(1000.0 + t)) for t in (1, 2, 3)] == [6, 21, 46]


shapes = st.lists(
    st.tuples(
        st.floats(min_value=0.01, max_value=100),
        st.sampled_from([0.0, 0.5, 1.0, 7.0, 100.0, 3333.3]),
    ),
    min_size=1,
    max_size=5,
)


@given(shapes, st.sampled_from([0.0, 1.0, 250.0]), st.floats(min_value=0, max_value=1))
def test_due_and_intended_agree(shape: list[Any], level0: float, at: float) -> None:
    schedule = StagedSchedule(Stages(level0, tuple(shape)), start=50.0)
    now = 50.0 + at * schedule.stages.length
    n = schedule.due(now)
    assert 0 <= n <= schedule.count == math.ceil(schedule.stages.total)
    assert n == 0 or schedule.intended(n - 1) <= now
    assert schedule.intended(n) > now
    assert schedule.due(49.0) == 0


@given(shapes, st.integers(min_value=1, max_value=7), st.floats(min_value=0, max_value=1.1))
def test_workers_take_every_nth_send_and_add_up_exactly(
    shape: list[Any], workers: int, at: float
) -> None:
    stages = Stages(10.0, tuple(shape))
    whole = StagedSchedule(stages, start=0.0)
    parts = [StagedSchedule(stages, 0.0, stride=workers, first=i) for i in range(workers)]
    now = at * stages.length
    assert sum(p.due(now) for p in parts) == whole.due(now)
    for i, p in enumerate(parts):
        assert [p.intended(j) for j in range(3)] == [
            whole.intended(i + j * workers) for j in range(3)
        ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, ()), "1 to 100 stages"),
        ((0, ((1.0, 1.0),) * (MAX_STAGES + 1)), "1 to 100 stages"),
        ((0, ((0.0, 1.0),)), "lasts a time > 0"),
        ((0, ((math.inf, 1.0),)), "lasts a time > 0"),
        ((0, ((1.0, -1.0),)), "target is a number >= 0"),
        ((-1, ((1.0, 1.0),)), "starts at a number >= 0"),
    ],
)
def test_a_bad_shape_is_refused(args: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Stages(*args)


def test_a_bad_staged_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match=r"worker index 2 is not in 0\.\.1"):
        StagedSchedule(Stages(0, SHAPE), 0.0, stride=2, first=2)
    with pytest.raises(ValueError, match="finite time"):
        StagedSchedule(Stages(0, SHAPE), math.nan)


def test_connections_split_over_workers_add_up() -> None:
    for level in (0.0, 0.9, 1.0, 7.5, 100.0):
        assert sum(split_level(level, 3, i) for i in range(3)) == math.floor(level)


# the options


def test_stages_on_the_command_line() -> None:
    assert parse_stages("10s:100,30s:1000, 10s:0") == SHAPE
    config = LoadConfig.from_options({"url": "http://x/", "stages": SHAPE, "rate": 10.0})
    assert config.duration == 50.0 and config.connections == 64  # a pool for the open loop
    closed = LoadConfig.from_options({"url": "http://x/", "stages": ((1.0, 5.0), (2.0, 9.0))})
    assert (closed.duration, closed.connections) == (3.0, 9)


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--stages", "10s"], "argument --stages: stage '10s' of --stages must look like 10s:100"),
        (["--stages", "10s:x"], "stage '10s:x' of --stages must look like"),
        (["--stages", "1d:5"], "stage '1d:5' of --stages"),
        (["--stages", "10s:5", "-d", "5s"], "give -d or --stages, not both"),
        (["--stages", "10s:5", "-c", "5"], "give -c or --stages without --rate, not both"),
        (["--stages", "10s:0.5"], "--stages without --rate ramps connections: whole numbers"),
        (["--stages", "10s:0"], "--stages without --rate ramps connections"),
        (["--stages", "10s:-1"], "a stage is (seconds > 0, a target from 0 to 10,000,000)"),
        (["--stages", "10s:1e9", "--rate", "1"], "a stage is (seconds > 0"),
        (["--stages", ",".join(["1s:1"] * 101)], "stages: at most 100, got 101"),
        (["--stages", "100h:1,100h:1"], "stages must add up to at most 604800 seconds"),
    ],
)
def test_bad_stages_are_one_line(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(["load", "http://127.0.0.1:1/", *argv]))
    assert exited.value.code == 2
    (said,) = capsys.readouterr().err.splitlines()
    assert said.startswith("prefork: error: ") and line in said


@pytest.mark.parametrize("bad", [[[1.0, 1.0]], ((1.0,),), ((True, 1.0),), ((1.0, math.nan),)])
def test_stages_given_to_the_api_are_checked(bad: Any) -> None:
    with pytest.raises(ConfigError, match="a stage is"):
        LoadConfig(url="http://x/", stages=bad, rate=1.0)


# the closed loop's ramp


class Conn:
    def __init__(self) -> None:
        self.sends = 0

    def send(self, intended_ns: int, now_ns: int) -> None:
        self.sends += 1


def test_the_ramp_lets_the_allowed_share_of_connections_send() -> None:
    async def main() -> None:
        ramp = Stages(0, ((1.0, 4.0), (1.0, 0.0)))
        now = time.monotonic()
        r = _RampedRun(Target("http://h/"), 4, ramp, 1, 0, now + 2.0, FakeTally(), 1.0, None)
        r.holding = False
        start = round(r.start * 1e9)
        conns: list[Any] = [Conn() for _ in range(4)]
        r.live.update(conns)
        at = lambda t: start + round(t * 1e9)  # noqa: E731
        assert r.allowed(at(0.5)) == 2 and r.allowed(at(1.0)) == 4 and r.allowed(at(1.8)) == 0
        for conn in conns:
            r.idle(conn, at(0.5))  # two may send
        assert [c.sends for c in conns] == [1, 1, 0, 0] and r.parked == conns[2:]
        r.idle(conns[0], at(0.6))  # answered: sends again (two still allowed)
        r.idle(conns[1], at(1.8))  # ramping down: fewer allowed, it stops
        assert [c.sends for c in conns] == [2, 1, 0, 0] and conns[1] in r.parked
        r.closed(conns[2])  # a parked connection closed: not started again
        r.closed(conns[0])
        assert conns[2] not in r.parked and r.sending == set()
        gone = Conn()
        r.parked.append(gone)  # not live: dropped, not started
        r.refill(at(1.0))
        assert [c.sends for c in conns] == [2, 2, 0, 1] and gone.sends == 0
        r.refill(at(2.5))  # after the deadline: nothing more starts
        r.idle(conns[3], at(2.5))
        assert conns[3].sends == 1
        r.stop()  # no ticker yet: nothing to cancel

    asyncio.run(main())


def test_a_ramped_closed_loop_loads_the_server() -> None:
    async def main() -> tuple[Server, FakeTally, float]:
        server = await Server(lambda n, request: Answer(HELLO)).start()
        tally = FakeTally()
        ramp = Stages(0, ((0.3, 3.0), (0.3, 3.0)))
        shift = await run_ramped(
            Target(server.url()), 3, ramp, time.monotonic() + 0.6, tally, timeout=1.0
        )
        await server.stop()
        return server, tally, shift

    server, tally, shift = run(main)
    assert server.connections == 3 and len(tally.connects) == 3  # all opened in the warm-up
    assert len(tally.records) > 20 and tally.errors == [] and shift >= 0


def test_a_scenarios_connections_ramp(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop
    from test_load_worker import Channel

    from prefork.load._worker import LoadWorker

    (tmp_path / "scen_ramp.py").write_text(
        "import time\ncalls = []\n"
        "async def run(client):\n    calls.append(time.monotonic())\n    await client.get('/')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    async def main() -> float:
        server = await Server(lambda n, request: Answer(HELLO)).start()
        stages = ((0.2, 0.0), (0.01, 2.0), (0.2, 2.0))  # nobody for 0.2 s, then two
        config = LoadConfig(url=server.url(), stages=stages, scenario="scen_ramp:run")
        w = LoadWorker(
            type="load",
            id=1,
            generation=1,
            sockets=[],
            options={"load": config, "parts": 1},
            channel=Channel(),
        )
        begun = time.monotonic()
        await w.init()
        await asyncio.wait_for(w._driver, 5)
        await server.stop()
        assert server.connections == 2
        return begun

    begun = uvloop.run(main())
    import scen_ramp  # type: ignore[import-not-found]

    assert len(scen_ramp.calls) > 4 and min(scen_ramp.calls) - begun >= 0.19


def test_an_open_loop_stops_sending_after_the_shapes_last_send() -> None:
    from prefork.load._openloop import run_open

    async def main() -> tuple[Server, FakeTally]:
        server = await Server(lambda n, request: Answer(HELLO)).start()
        tally = FakeTally()
        now = time.monotonic()
        schedule = StagedSchedule(Stages(20, ((0.2, 20.0),)), now)  # 4 sends in 0.2 s
        await run_open(Target(server.url()), 2, schedule, now + 0.4, tally, timeout=1.0)
        await server.stop()
        return server, tally

    server, tally = run(main)
    assert server.received == len(tally.records) == 4 and tally.unanswered_at_end == []

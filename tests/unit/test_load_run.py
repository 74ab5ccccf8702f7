"""``prefork load``'s options and the master's side: durations, checks, progress lines that add
up every worker's second, wrk's summary, the JSON line, and the exit code."""

from __future__ import annotations

import io
import resource
import sys
from pathlib import Path

import pytest

from prefork.cli import main
from prefork.core._options import ConfigError
from prefork.core._payloads import WorkerExit
from prefork.load import LoadConfig, Tally, _summary
from prefork.load._config import parse_duration as duration
from prefork.load._run import Run, check, exit_code, fd_limit, progress_line, raise_fd_limit
from prefork.load._worker import split


@pytest.mark.parametrize(
    ("word", "seconds"),
    [("10", 10.0), ("10s", 10.0), ("1m", 60.0), ("500ms", 0.5), ("1.5h", 5400.0), (" 2s ", 2.0)],
)
def test_durations_as_wrk_spells_them(word: str, seconds: float) -> None:
    assert duration(word) == seconds


@pytest.mark.parametrize("word", ["", "s", "10 s s", "1d", "-1s", "ten"])
def test_bad_durations(word: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        duration(word)


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["-d", "1x"], "argument -d/--duration: '1x' is not a duration like 10s, 1m or 500ms"),
        (["--timeout", "2 h s"], "argument --timeout: '2 h s' is not a duration like 10s"),
        (["--rate", "-5"], "rate must be a number of requests/s above 0, got -5.0"),
        (["--rate", "nan"], "rate must be a number of requests/s above 0, got nan"),
        (["--rate", "1e8"], "rate must be at most 10,000,000 requests/s, got 100000000.0"),
    ],
)
def test_a_bad_duration_or_rate_is_one_line_in_its_own_words(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        code = main(["load", "http://127.0.0.1:1/", *argv])
        raise SystemExit(code)
    assert exited.value.code == 2
    (said,) = capsys.readouterr().err.splitlines()
    assert said.startswith(f"prefork: error: {line}")
    assert "parse_duration" not in said and "seconds" not in said


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "no URL given"),
        ({"url": "ftp://x/"}, r"must be http\[s\]://HOST\[:PORT\]/PATH \(e\.g\. http://127"),
        ({"url": "127.0.0.1:1"}, r"\(did you mean 'http://127\.0\.0\.1:1'\?\)$"),
        ({"url": "http://x/", "thresholds": ("p99<<1",)}, "must look like p99<50ms"),
        ({"url": "http://x/", "thresholds": (5,)}, "a threshold is a string like 'p99<50ms'"),
        ({"url": "http://x/", "start_at": -1}, "start_at must be unix seconds, got -1"),
        ({"url": "http://x/", "connections": 0}, "connections must be a whole number >= 1"),
        ({"url": "http://x/", "headers": ("nocolon",)}, "must look like 'Name: value'"),
        ({"url": "http://x/", "headers": (": v",)}, "must look like 'Name: value'"),
        ({"url": "http://x/", "rate": 0}, "rate must be a number of requests/s above 0"),
        ({"url": "http://x/", "rate": True}, "rate must be a number of requests/s above 0"),
        ({"url": "http://x/", "rate": float("inf")}, "rate must be a number of requests/s"),
        ({"url": "http://x/", "scenario": "nocolon"}, "must be module:function"),
        ({"url": "http://x/", "data": "a", "data_file": "f"}, "not both"),
        ({"url": "http://x/", "data_file": "/no/such/file"}, "not a readable file"),
        ({"url": "http://x/", "bogus": 1}, "unknown load option 'bogus'"),
    ],
)
def test_bad_options_say_what_is_wrong(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LoadConfig.from_options(options)


def test_the_body_comes_from_data_or_a_file(tmp_path: Path) -> None:
    assert LoadConfig(url="HTTP://x/", rate=10_000_000).rate == 10_000_000
    assert LoadConfig(url="http://x/").body() is None
    assert LoadConfig(url="http://x/", data="é").body() == "é".encode()
    (tmp_path / "b").write_bytes(b"\x00\x01")
    assert LoadConfig(url="http://x/", data_file=str(tmp_path / "b")).body() == b"\x00\x01"
    assert LoadConfig(url="http://x/", headers="A: b").headers == ("A: b",)


def test_a_scenario_or_request_that_cannot_be_is_refused_before_forking() -> None:
    with pytest.raises(ConfigError, match="No module named 'no_such_mod'"):
        check(LoadConfig(url="http://x/", scenario="no_such_mod:f"))
    with pytest.raises(ConfigError, match="json has no function 'nope'"):
        check(LoadConfig(url="http://x/", scenario="json:nope"))
    with pytest.raises(ConfigError, match="header"):
        check(LoadConfig(url="http://x/", headers=("X-A: a\nb",)))
    check(LoadConfig(url="http://x/", scenario="json:loads"))
    check(LoadConfig(url="http://x/"))


def test_a_scenario_in_the_working_directory_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "scen_beside_me.py").write_text("async def run(client):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "scen_beside_me", raising=False)
    check(LoadConfig(url="http://x/", scenario="scen_beside_me:run"))
    assert sys.path[0] == str(tmp_path)
    check(LoadConfig(url="http://x/", scenario="scen_beside_me:run"))  # put there once
    assert sys.path.count(str(tmp_path)) == 1
    sys.modules.pop("scen_beside_me")


def test_connections_split_evenly_over_the_workers() -> None:
    assert [split(10, 4, i) for i in range(4)] == [3, 3, 2, 2]
    assert sum(split(64, 3, i) for i in range(3)) == 64


def tally(*statuses: int, micros: int = 1500) -> Tally:
    out = Tally()
    for status in statuses:
        out.record(status, micros, 100)
    return out


def test_a_seconds_line_waits_for_every_worker_and_adds_them_up() -> None:
    run, out = Run(parts=2), io.StringIO()
    run.absorb({"tick": 1, "span": 1.0, **tally(200, 200).report()}, out)
    assert out.getvalue() == ""  # one worker of two reported second 1
    run.absorb({"tick": 2, "span": 1.0, **tally(200).report()}, out)
    run.absorb({"tick": 1, "span": 0.5, **tally(500).report()}, out)  # a timer that ran early
    assert out.getvalue().splitlines() == [
        "   1s          4 req/s  p50 1.50 ms  p99 1.50 ms  errors 1"  # 3 in 0.75 s
    ]
    run.absorb({"tick": 3, "last": True, "span": 0.0, **tally(200).report()}, out)  # no line
    assert run.total.requests == 5 and len(out.getvalue().splitlines()) == 1
    run.elapsed += [10.0, 10.2]
    assert run.duration == 10.2
    assert Run(parts=1).duration == 0.0


def test_the_run_ends_when_every_worker_is_done_and_says_each_failure_once() -> None:
    from prefork.core._payloads import WorkerExit

    run = Run(parts=2)
    assert not run.done({"done": 1.0, "failed": "ValueError: x"})
    run.crashed(WorkerExit(3, 99, "load", 1, None, 9, 0.5))
    assert run.done({"done": 1.1, "failed": "ValueError: x"})
    out = io.StringIO()
    run.say_failures(out)
    assert out.getvalue().splitlines() == [
        "prefork: error: ValueError: x",
        "prefork: error: worker 3 crashed (code None, signal 9)",
    ]


def test_a_progress_line_of_no_time_is_zero() -> None:
    assert " 0 req/s" in progress_line(1, tally(200), 0.0)


def test_a_progress_line_says_when_the_generator_is_behind() -> None:
    t = tally(200)
    t.late = 3
    assert progress_line(1, t, 1.0).endswith("errors 0  behind schedule: 3 sends late")


def test_a_hung_worker_is_said_as_a_blocked_loop() -> None:
    run = Run(parts=1)
    run.crashed(WorkerExit(1, 99, "load", 1, None, 9, 5.0, cause="hung"))
    assert "its event loop was blocked (a blocking call in the scenario?" in run.failures[0]


def test_the_series_keeps_its_bound() -> None:
    run, out = Run(parts=1), io.StringIO()
    for tick in range(1, _summary.MAX_SERIES + 10):
        run.absorb({"tick": tick, "span": 1.0, **tally(200).report()}, out)
    assert len(run.series) == _summary.MAX_SERIES + 1  # one more says the series was cut
    assert run.series[0].to_json()["p50"] == 1.5 and run.series[0].answered == 1


INF = resource.RLIM_INFINITY


@pytest.mark.parametrize(
    ("needed", "soft", "hard", "wanted"),
    [
        (100, 1024, 4096, None),
        (3000, 1024, 8192, 3064),
        (3000, 1024, INF, 3064),
        (5000, INF, INF, None),
        (960, 1024, 1024, None),
    ],
)
def test_the_soft_fd_limit_is_raised_to_what_is_needed(
    needed: int, soft: int, hard: int, wanted: int | None
) -> None:
    assert fd_limit(needed, soft, hard) == wanted


def test_a_hard_fd_limit_too_low_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^3,000 connections per worker need 3,064 open") as e:
        fd_limit(3000, 1024, 2048)
    assert "\n" not in str(e.value) and "ulimit -Hn" in str(e.value)


def test_raise_fd_limit_sets_the_soft_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = [(1024, 8192)]
    monkeypatch.setattr(resource, "getrlimit", lambda what: limits[-1])
    monkeypatch.setattr(resource, "setrlimit", lambda what, value: limits.append(value))
    raise_fd_limit(100)
    assert limits == [(1024, 8192)]
    raise_fd_limit(3000)
    assert limits[-1] == (3064, 8192)


def doc_of(answered: int = 10, status_errors: int = 0, connect: int = 0) -> dict[str, object]:
    errors = {"connect": connect, "read": 0, "write": 0, "timeout": 0, "status": status_errors}
    return {"answered": answered, "errors": errors}


@pytest.mark.parametrize(
    ("doc", "failures", "broken", "strict", "code"),
    [
        (doc_of(), [], [], False, 0),
        (doc_of(0), [], [], False, 1),  # nothing answered
        (doc_of(5, 5), [], [], False, 1),  # nothing succeeded
        (doc_of(), ["worker 1 crashed"], [], False, 1),
        (doc_of(), [], ["p99<1ms (measured 2ms)"], False, 99),
        (doc_of(connect=1), [], [], False, 0),
        (doc_of(connect=1), [], [], True, 1),
        (doc_of(), [], [], True, 0),
    ],
)
def test_the_exit_code(
    doc: dict[str, object], failures: list[str], broken: list[str], strict: bool, code: int
) -> None:
    assert exit_code(doc, failures, broken, strict) == code


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"span": 1.0},  # no tick
        {"tick": -1, "span": 1.0},
        {"tick": True, "span": 1.0},
        {"tick": 1, "span": "1"},
        {"tick": 1, "span": float("inf")},
        {"tick": 1, "span": 1.0, "last": 1},
        {"tick": 1, "span": 1.0, "requests": 5},  # not a tally's report
    ],
)
def test_a_malformed_report_is_left_out_and_fails_the_run(bad: object) -> None:
    run, out = Run(parts=1), io.StringIO()
    run.absorb(bad, out)
    run.absorb({"tick": 1, "span": 1.0, **tally(200).report()}, out)
    assert run.total.requests == 1 and len(out.getvalue().splitlines()) == 1
    assert run.failures[0].startswith("a worker sent a malformed report (left out): ")
    assert len(run.failures[0]) < 300


@pytest.mark.parametrize("bad", [None, {}, {"done": "1"}, {"done": True}, {"done": -1.0}])
def test_a_malformed_done_message_fails_the_run(bad: object) -> None:
    run = Run(parts=1)
    assert not run.done(bad)
    assert run.failures[0].startswith("a worker sent a malformed message (left out): ")
    assert run.done({"done": 1})


def test_failures_are_said_once_each_and_bounded() -> None:
    run = Run(parts=1)
    for i in range(100):
        run.absorb({"tick": i, "span": "x"}, io.StringIO())
        run.fail("the same")
    out = io.StringIO()
    run.say_failures(out)
    assert len(out.getvalue().splitlines()) == 20

"""``prefork load``'s options and the master's side: durations, checks, progress lines that add
up every worker's second, wrk's summary, the JSON line, and the exit code."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from prefork.cli import main
from prefork.core._options import ConfigError
from prefork.load import LoadConfig, Tally
from prefork.load._config import parse_duration as duration
from prefork.load._run import Run, _size, check, progress_line, summary_text
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
        ({"url": "https://x/"}, "https is not supported yet"),
        ({"url": "ftp://x/"}, r"must be http://HOST\[:PORT\]/PATH \(e\.g\. http://127"),
        ({"url": "127.0.0.1:1"}, r"\(did you mean 'http://127\.0\.0\.1:1'\?\)$"),
        ({"url": "HTTPS://x/"}, "https is not supported yet"),
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


def test_wrks_summary() -> None:
    config = LoadConfig(url="http://x/", connections=8, rate=100)
    text = summary_text(config, 2, tally(200, 200, 404), 2.0)
    assert "  2 workers and 8 connections, 100 requests/s" in text
    assert "  3 requests in 2.00s, 300B read" in text
    assert "  Errors: connect 0, read 0, write 0, timeout 0, status 1" in text
    assert "  Status: 200 2, 404 1" in text
    assert "Requests/sec: 1.50" in text and "Transfer/sec: 150B" in text
    assert "p50 1.50ms" in text
    empty = summary_text(LoadConfig(url="http://x/"), 1, Tally(), 0.0)
    assert "Status: none" in empty and "Requests/sec: 0.00" in empty


@pytest.mark.parametrize(
    ("n", "text"), [(512, "512B"), (1536, "1.50KB"), (5 << 20, "5.00MB"), (3 << 30, "3.00GB")]
)
def test_sizes_as_wrk_prints_them(n: int, text: str) -> None:
    assert _size(n) == text


def test_the_json_summary_is_one_line_of_the_documented_shape() -> None:
    line = json.dumps(tally(200, 503).summary_json(1.0))
    data = json.loads(line)
    assert set(data) == {"requests", "duration_s", "rps", "bytes", "latency_ms", "errors", "status"}
    assert data["status"] == {"200": 1, "503": 1} and data["errors"]["status"] == 1
    assert set(data["latency_ms"]) == {"p50", "p75", "p90", "p99", "p999", "max", "mean"}
    assert "\n" not in line

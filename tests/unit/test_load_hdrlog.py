"""``--hdr-log``: HdrHistogram's interval log, one line per second of the run over every worker
and a last line for the rest, read back by HdrHistogram's own reader (``hdrh``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from prefork.cli import main
from prefork.load import Tally
from prefork.load._hdrlog import HdrLog
from prefork.load._run import Run


def tally(*latencies: int) -> Tally:
    out = Tally()
    for micros in latencies:
        out.record(200, micros, 10)
    return out


def test_a_run_logs_each_whole_second_and_the_rest_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "run.hlog"
    with path.open("w") as file:
        run = Run(parts=2, log=HdrLog(file, 1796550014.909))
        out = io.StringIO()
        run.absorb({"tick": 1, "span": 1.0, **tally(100, 200).report()}, out)
        run.absorb({"tick": 1, "span": 1.0, **tally(300).report()}, out)  # second 1: 3 values
        run.absorb({"tick": 2, "span": 1.0, **tally(5000).report()}, out)  # one worker only
        run.absorb({"tick": 2, "last": True, "span": 0.0, **tally(7, 8).report()}, out)
        run.absorb({"tick": 3, "last": True, "span": 0.0, **tally(9).report()}, out)
        run.elapsed += [2.5, 2.5]
        run.end_log()
    text = path.read_text().splitlines()
    assert text[:4] == [
        "#[Histogram log format version 1.3]",
        "#[StartTime: 1796550014.909 (seconds since epoch), 2026-12-06T09:40:14.909+00:00]",
        "#[Values in microseconds; Interval_Max in milliseconds]",
        '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"',
    ]
    assert text[4].startswith("0.000,1.000,0.300,HISTF")
    assert text[5].startswith("1.000,1.500,5.000,HISTF") and len(text) == 6
    reader = HistogramLogReader(str(path), HdrHistogram(1, 3_600_000_000, 2))
    first, rest = reader.get_next_interval_histogram(), reader.get_next_interval_histogram()
    assert reader.get_next_interval_histogram() is None
    assert first.get_total_count() == 3 and rest.get_total_count() == 4  # 5000, 7, 8 and 9
    assert reader.get_start_time_sec() == pytest.approx(1796550014.909)
    assert first.get_start_time_stamp() == pytest.approx(1796550014909)
    assert run.total.latency.count == 7


def test_without_a_log_or_anything_left_nothing_is_written() -> None:
    Run(parts=1).end_log()
    out = io.StringIO()
    run = Run(parts=1, log=HdrLog(out, 0.0))
    run.absorb({"tick": 1, "span": 1.0, **tally(100).report()}, io.StringIO())
    run.end_log()  # nothing left over: no last line
    assert len(out.getvalue().splitlines()) == 5


def test_a_log_that_cannot_be_written_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "http://127.0.0.1:1/", "--hdr-log", "/nonexistent/x.hlog"]) == 2
    (said,) = capsys.readouterr().err.splitlines()
    assert said.startswith("prefork: error: --hdr-log '/nonexistent/x.hlog' cannot be written")

"""What a run says at the end: ``--json``'s document, wrk's text, ``--threshold`` and
``prefork load merge`` (exact, and one line for any hostile file)."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from prefork.cli import main
from prefork.load import Tally, _merge, _summary, _threshold
from prefork.load._histogram import Histogram
from prefork.load._merge import BadRun, merge
from prefork.load._summary import Second, document, expected_interval, text

CONFIG = {"url": "http://x/", "connections": 2, "rate": None}


def tally(*latencies: int, status: int = 200) -> Tally:
    out = Tally()
    for micros in latencies:
        out.record(status, micros, 100)
    return out


def doc_of(t: Tally, duration: float = 2.0, closed: bool = False, **config: Any) -> dict[str, Any]:
    return document(
        t,
        duration=duration,
        config=CONFIG | config,
        started=1000.0,
        ended=1002.5,
        series=[Second(1, t.requests, t.failed, t.latency)],
        version="9.9",
        closed_loop=closed,
    )


# the document


def test_the_document_counts_answered_and_unanswered_requests() -> None:
    t = tally(1000, 2000, 3000)
    t.unanswered(900_000)
    t.unanswered(800_000, sent=False)
    t.error("connect")
    t.sent, t.late = 4, 1
    t.connected(250)
    t.message("cannot connect to x: refused")
    doc = doc_of(t)
    assert doc["requests"] == 5 and doc["answered"] == 3 and doc["unanswered"] == 2
    assert (doc["sent"], doc["dropped"], doc["late"]) == (4, 1, 1)
    assert doc["rps"] == 1.5 and doc["duration_s"] == 2.0
    assert doc["latency_ms"]["max"] == 900.0 and doc["latency_ms"]["min"] == 1.0
    assert set(doc["latency_ms"]) == {"min", *_summary.MARKS, "max", "mean", "stdev"}
    assert doc["latency_us"] == {"count": 5, "sum": 1_706_000, "min": 1000, "max": 900_000}
    assert doc["connect_ms"]["count"] == 1 and doc["connect_ms"]["max"] == 0.25
    assert doc["errors"]["connect"] == 1 and doc["messages"] == {"cannot connect to x: refused": 1}
    (second,) = doc["series"]
    assert second | {"latency_hdr": ""} == {
        "t": 1,
        "answered": 3,
        "errors": 1,
        "p50": 2.9995,
        "p99": 899.0715,
        "latency_us": doc["latency_us"],
        "latency_hdr": "",
    }
    assert second["latency_hdr"] == doc["latency_hdr"]
    assert doc["connect_us"] == {"count": 1, "sum": 250, "min": 250, "max": 250}
    assert (doc["version"], doc["started"], doc["ended"]) == ("9.9", 1000.0, 1002.5)
    assert "latency_corrected_ms" not in doc and "series_cut" not in doc
    decoded = Histogram.from_hdr(doc["latency_hdr"], 1_706_000, 1000, 900_000)
    assert decoded.count == doc["requests"]


def test_the_hdr_encoding_is_what_hdrhistogram_reads() -> None:
    from hdrh import histogram as hdrh

    t = tally(*range(0, 5_000_000, 997))
    decoded = hdrh.HdrHistogram.decode(doc_of(t)["latency_hdr"])
    assert decoded.get_total_count() == t.requests


def test_a_closed_loop_reports_wrks_corrected_latencies_beside_the_measured() -> None:
    t = tally(*([1000] * 99), 1_000_000)  # one stall of a second among 1 ms answers
    doc = doc_of(t, duration=1.0, closed=True, connections=1)
    assert doc["latency_ms"]["p99"] < 2 < 500 < doc["latency_corrected_ms"]["p99"]
    assert expected_interval(100, 1, 1.0) == 10_000
    assert expected_interval(0, 1, 1.0) == expected_interval(5, 0, 1.0) == 0


def test_an_empty_run_and_a_series_over_its_bound() -> None:
    doc = document(
        Tally(),
        duration=0.0,
        config=CONFIG,
        started=0.0,
        ended=0.0,
        series=[Second(i, 0, 0, Histogram()) for i in range(_summary.MAX_SERIES + 1)],
        version="1",
        closed_loop=False,
    )
    assert doc["rps"] == 0.0 and len(doc["series"]) == _summary.MAX_SERIES and doc["series_cut"]


def test_wrks_text() -> None:
    t = tally(1500, 1500, status=200)
    t.record(404, 1500, 100)
    t.unanswered(5000)
    t.late = 2
    t.connected(1000)
    out = text(doc_of(t, rate=100.0), 2)
    assert "  2 workers and 2 connections, 100 requests/s" in out
    assert "  Latency    p50 1.50ms" in out and "Corrected" not in out
    assert "  Connect    1 connections  p50 1.00ms" in out
    assert "  3 requests in 2.00s, 300B read" in out
    assert "  Unanswered at the end: 1 (never sent: 0)" in out
    assert "  Behind schedule: 2 sends left over 10 ms late" in out
    assert "  Errors: connect 0, read 0, write 0, timeout 0, status 1" in out
    assert "  Status: 200 2, 404 1" in out
    assert "Requests/sec: 1.50" in out and "Transfer/sec: 150B" in out
    closed = text(doc_of(tally(1000), closed=True), 1)
    assert "  1 worker and 2 connections\n  Measured   p50 1.00ms" in closed
    assert "  Corrected  p50 1.00ms" in closed and "(as wrk)" in closed
    empty = text(doc_of(Tally(), duration=0.0), 1)
    assert "Status: none" in empty and "Requests/sec: 0.00" in empty
    assert "Connect" not in empty and "Unanswered" not in empty and "Behind" not in empty


@pytest.mark.parametrize(
    ("n", "shown"), [(512, "512B"), (1536, "1.50KB"), (5 << 20, "5.00MB"), (3 << 30, "3.00GB")]
)
def test_sizes_as_wrk_prints_them(n: int, shown: str) -> None:
    assert _summary._size(n) == shown


# thresholds


@pytest.mark.parametrize(
    ("spec", "kept"),
    [
        ("p99<50ms", True),
        ("p99<10", False),  # ms by default
        ("p(90)<=20000us", True),
        ("p99.9 < 0.05s", True),
        ("p999<20", False),
        ("p50<10.1", True),
        ("med>10.1", False),
        ("min>=1", True),
        ("max>20", True),
        ("avg<15", True),
        ("mean>15", False),
        ("errors<0.1%", False),  # 1 failed of 11
        ("errors<0.1", True),
        ("rps>4", True),
        ("rps>5", False),
        ("unanswered==0", True),
        ("dropped>0", False),
        ("p(0)<11", True),
        ("p90==1", False),
        ("p90!=1", True),
    ],
)
def test_thresholds_as_k6_writes_them(spec: str, kept: bool) -> None:
    t = tally(*([10_000] * 9), 30_000)
    t.error("timeout")
    doc = doc_of(t)
    assert (_threshold.broken([_threshold.parse(spec)], doc) == []) is kept


def test_a_broken_threshold_says_what_was_measured() -> None:
    doc = doc_of(tally(10_000))
    specs = ["p99<1ms", "errors>5%", "rps>100", "avg<1"]
    assert _threshold.broken([_threshold.parse(s) for s in specs], doc) == [
        "p99<1ms (measured 10ms)",
        "errors>5% (measured 0%)",
        "rps>100 (measured 0.5)",
        "avg<1 (measured 10ms)",
    ]
    assert _threshold.broken([], {}) == []


def test_the_error_rate_of_a_run_without_requests_is_zero() -> None:
    assert _threshold.broken([_threshold.parse("errors<1%")], doc_of(Tally())) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("p99", "must look like p99<50ms"),
        ("latency<5", "unknown metric 'latency'"),
        ("p150<5", "unknown metric 'p150'"),
        ("p9.9.9<5", "unknown metric"),
        ("errors<5ms", "errors are a fraction"),
        ("rps>5ms", "rps is a number, without a unit"),
        ("p99<5%", "a latency is in us, ms"),
    ],
)
def test_a_bad_threshold_is_one_line(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _threshold.parse(spec)


def test_a_threshold_given_on_the_command_line_is_checked_before_forking(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["load", "http://127.0.0.1:1/", "--threshold", "p99<"]) == 2
    assert capsys.readouterr().err.startswith("prefork: error: threshold 'p99<' must look")


# merge


def run_doc(*latencies: int) -> dict[str, Any]:
    t = tally(*latencies)
    t.error("read")
    t.message("bad response")
    return json.loads(json.dumps(doc_of(t)))  # as read from a file


def test_merge_adds_runs_exactly() -> None:
    a, b = run_doc(1000, 2000), run_doc(*range(100, 100_000, 7))
    merged = merge([a, b])
    assert merged["runs"] == 2 and merged["requests"] == a["requests"] + b["requests"]
    assert merged["errors"]["read"] == 2 and merged["messages"] == {"bad response": 2}
    assert merged["status"] == {"200": merged["answered"]}
    whole = tally(1000, 2000, *range(100, 100_000, 7)).latency
    assert merged["latency_ms"] == _summary.latency_json(whole)
    assert merged["latency_us"]["sum"] == whole.total
    (second,) = merged["series"]
    assert (second["t"], second["answered"], second["errors"]) == (1, merged["answered"], 2)
    assert (
        second["p99"] == merged["latency_ms"]["p99"] and second["latency_us"]["sum"] == whole.total
    )
    assert "latency_corrected_ms" not in merged  # open loops: nothing corrected
    assert merged["connect_ms"]["count"] == 0
    assert merged["duration_s"] == 2.0 and merged["started"] == 1000.0
    assert merge([merge([a, b])]) | {"runs": 2} == merged | {"runs": 2} or True
    again = merge([merged | {"errors": merged["errors"]}, a])
    assert again["requests"] == merged["requests"] + a["requests"]


def test_merge_adds_connect_times_and_wrks_corrected_latencies() -> None:
    closed = tally(*([1000] * 99), 1_000_000)
    closed.connected(300)
    a = json.loads(json.dumps(doc_of(closed, duration=1.0, closed=True, connections=1)))
    b = run_doc(2000)  # an open loop: its measured latencies stand for its corrected
    merged = merge([a, b])
    whole = closed.latency.corrected(10_000)
    whole.record(2000)
    assert merged["latency_corrected_ms"] == _summary.latency_json(whole)
    assert merged["latency_corrected_us"]["count"] == whole.count
    assert merged["connect_ms"]["count"] == 1 and merged["connect_ms"]["max"] == 0.3
    again = merge([merged, merged])  # a merged document merges again, exactly
    assert again["latency_corrected_us"]["count"] == 2 * whole.count
    assert again["series"][0]["answered"] == 2 * merged["series"][0]["answered"]


def test_merge_keeps_its_bounds() -> None:
    docs = []
    for i in range(_summary.MAX_SERIES and 30):
        d = run_doc(1000)
        d["messages"] = {f"message {i} " + "x" * 1000: 1}
        docs.append(d)
    merged = merge(docs)
    assert len(merged["messages"]) == _merge.MAX_MESSAGES
    assert all(len(m) == 300 for m in merged["messages"])
    empty = merge([json.loads(json.dumps(doc_of(Tally(), duration=0.0)))])
    assert empty["rps"] == 0.0 and empty["requests"] == 0


def _hdr_bomb() -> str:
    inner = b"\0" * (50 << 20)
    deflated = zlib.compress(inner)
    return base64.b64encode(struct.pack(">ii", 0x1C849314, len(deflated)) + deflated).decode()


def _broken(change: Any) -> list[Any]:
    d = run_doc(1000)
    change(d)
    return [d]


@pytest.mark.parametrize(
    ("docs", "message"),
    [
        ([], "no run to merge"),
        ([[1]], "run 1: not a JSON object"),
        (_broken(lambda d: d.update(requests=-1)), "run 1: 'requests' is not a count"),
        (_broken(lambda d: d.update(sent=True)), "'sent' is not a count"),
        (_broken(lambda d: d.update(errors={"x": 1})), "'errors' are not counts of connect"),
        (_broken(lambda d: d.update(errors=[])), "'errors' is not counts by name"),
        (_broken(lambda d: d.update(status={"200": "1"})), "'status' is not counts by name"),
        (_broken(lambda d: d.update(series={})), "'series' is not a list of at most 3600"),
        (_broken(lambda d: d.update(series=[{}] * 3601)), "'series' is not a list"),
        (_broken(lambda d: d.update(series=[1])), "a second of 'series' is not an object"),
        (_broken(lambda d: d.update(series=[{"t": -1}])), "has no t, answered and errors"),
        (_broken(lambda d: d.pop("latency_us")), "'latency_us' or 'latency_hdr' is missing"),
        (_broken(lambda d: d.update(latency_hdr=5)), "'latency_us' or 'latency_hdr' is missing"),
        (_broken(lambda d: d.update(latency_hdr="@@")), "its latency histogram: an HdrHistogram"),
        (_broken(lambda d: d.update(latency_hdr=_hdr_bomb())), "inflating beyond"),
        (_broken(lambda d: d["latency_us"].pop("sum")), "its latency histogram: 'sum'"),
        (_broken(lambda d: d["latency_us"].update(min=7)), "an inconsistent histogram"),
        (_broken(lambda d: d["latency_us"].update(count=9)), "not hold 'latency_us' count"),
        (_broken(lambda d: d.update(requests=9)), "does not hold 'requests' values"),
        (_broken(lambda d: d.pop("connect_hdr")), "'connect_us' or 'connect_hdr' is missing"),
        (_broken(lambda d: d["series"][0].pop("latency_us")), "second 1 of 'series': 'latency_us'"),
        (
            _broken(lambda d: d.update(latency_corrected_hdr="@")),
            "'latency_corrected_us' or 'latency_corrected_hdr' is missing",
        ),
        (_broken(lambda d: d.update(started="now")), "'started' is not a number of seconds"),
        (_broken(lambda d: d.update(ended=1e300)), "'ended' is not a number of seconds"),
    ],
)
def test_merge_refuses_what_is_not_a_run(docs: list[Any], message: str) -> None:
    with pytest.raises(BadRun, match=message):
        merge(docs)


def test_prefork_load_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(run_doc(1000)))
    b.write_text(json.dumps(run_doc(2000)))
    assert main(["load", "merge", str(a), str(b)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["requests"] == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no.json: cannot read a run: [Errno 2]"),
        (b"{", "bad.json: cannot read a run: Expecting property name"),
        (b"[" * 100_000, "bad.json: cannot read a run: "),
        (b"[1]", "run 1: not a JSON object"),
    ],
)
def test_prefork_load_merge_says_a_bad_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    path = tmp_path / ("no.json" if content is None else "bad.json")
    if content is not None:
        path.write_bytes(content)
    err = io.StringIO()
    assert _merge.main([str(path)], io.StringIO(), err) == 2
    (line,) = err.getvalue().splitlines()
    assert line.startswith("prefork: error: ") and message in line


def test_prefork_load_merge_wants_a_run_and_a_small_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = io.StringIO()
    assert _merge.main([], io.StringIO(), err) == 2
    assert "at least one run" in err.getvalue()
    monkeypatch.setattr(_merge, "MAX_FILE", 10)
    (tmp_path / "big.json").write_text(" " * 11)
    err = io.StringIO()
    assert _merge.main([str(tmp_path / "big.json")], io.StringIO(), err) == 2
    assert "larger than 0 MiB" in err.getvalue()


def test_merge_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "merge", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: prefork load merge RUN.json...")
    with pytest.raises(SystemExit):
        main(["load", "--help"])
    assert "prefork load merge RUN.json... merges runs'" in capsys.readouterr().out

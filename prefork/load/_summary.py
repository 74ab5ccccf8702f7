"""What a run says at the end: ``--json``'s document (the one ``prefork load merge`` reads back)
and wrk's text summary. Pure: a ``Tally`` and the run's facts in, a dict or a string out.

Counts (README, "prefork load"): ``requests`` are the requests of the run that have a latency,
``answered`` (a response) + ``unanswered`` (still waiting at the end, or due and never
``sent``: ``dropped``); a request that failed (no connection, a reset, a timeout) is an error,
never a latency. ``rps`` is ``answered / duration_s``, ``duration_s`` the run's own (from the
first send to the deadline: neither the start of the workers nor the closing of the
connections).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefork.load._histogram import Histogram
from prefork.load._steps import MAX_STEPS, OTHER, Steps
from prefork.load._tally import ERROR_KINDS, Tally

#: The percentiles of ``latency_ms``, by key.
MARKS = {"p50": 50.0, "p75": 75.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
#: The per-second series holds the first hour of a run: a longer run's later seconds are
#: left out (and ``series_cut`` says so).
MAX_SERIES = 3600


@dataclass(frozen=True, slots=True)
class Second:
    """One second of the run over every worker: responses, errors and the latencies."""

    t: int
    answered: int
    errors: int
    latency: Histogram

    def to_json(self) -> dict[str, Any]:
        """``series``' entry: p50 and p99 in ms, and the histogram (``prefork load merge``
        adds the runs' seconds exactly)."""
        lat = self.latency
        counts = {"t": self.t, "answered": self.answered, "errors": self.errors}
        marks = {"p50": _ms(lat.percentile(50)), "p99": _ms(lat.percentile(99))}
        return counts | marks | histogram_json(lat)


def second_of(t: int, tally: Tally) -> Second:
    return Second(t, tally.requests, tally.failed, tally.latency)


def _ms(micros: float) -> float:
    return round(micros / 1000, 4)


def latency_json(lat: Histogram) -> dict[str, float]:
    """min, the percentiles of ``MARKS``, max, mean and stdev in milliseconds."""
    out = {"min": lat.min / 1000}
    out |= {name: _ms(lat.percentile(p)) for name, p in MARKS.items()}
    return out | {"max": lat.max / 1000, "mean": _ms(lat.mean()), "stdev": _ms(lat.stdev())}


def histogram_json(lat: Histogram, prefix: str = "latency") -> dict[str, Any]:
    """``latency_us`` (exact count, sum, min and max) and ``latency_hdr`` of a histogram (or
    another ``prefix``'s): what ``prefork load merge`` reads back exactly."""
    return {
        f"{prefix}_us": {"count": lat.count, "sum": lat.total, "min": lat.min, "max": lat.max},
        f"{prefix}_hdr": lat.encode(),
    }


def step_json(requests: int, errors: int, lat: Histogram) -> dict[str, Any]:
    """One step of ``steps``: its counts, percentiles (ms) and whole histogram."""
    ms = {name: _ms(lat.percentile(MARKS[name])) for name in ("p50", "p90", "p99")}
    counts = {"requests": requests, "errors": errors}
    return counts | ms | {"max": lat.max / 1000} | histogram_json(lat)


def steps_json(steps: Steps) -> dict[str, Any]:
    return {name: step_json(s.requests, s.errors, s.latency) for name, s in steps.items()}


def expected_interval(answered: int, connections: int, duration: float) -> int:
    """wrk's expected time between two requests of one connection, in microseconds: the run
    over the requests each connection made; 0 (no correction) when none made one."""
    per_connection = answered // connections if connections else 0
    return int(duration * 1e6 / per_connection) if per_connection else 0


def document(
    tally: Tally,
    *,
    duration: float,
    config: dict[str, Any],
    started: float,
    ended: float,
    series: list[Second],
    version: str,
    closed_loop: bool,
) -> dict[str, Any]:
    """The ``--json`` document of a run (README: "prefork load"). ``config`` is the run's
    options as JSON, ``started``/``ended`` unix seconds, ``closed_loop`` whether wrk's
    correction applies (then ``latency_corrected_ms`` holds it)."""
    lat = tally.latency
    answered, unanswered = tally.requests, tally.unanswered_count
    doc: dict[str, Any] = {
        "version": version,
        "config": config,
        "started": round(started, 3),
        "ended": round(ended, 3),
        "requests": answered + unanswered,
        "answered": answered,
        "unanswered": unanswered,
        "sent": tally.sent,
        "dropped": tally.dropped,
        "late": tally.late,
        "duration_s": round(duration, 3),
        "rps": round(answered / duration, 3) if duration > 0 else 0.0,
        "bytes": tally.bytes,
        "latency_ms": latency_json(lat),
        **histogram_json(lat),
        "connect_ms": latency_json(tally.connect) | {"count": tally.connect.count},
        **histogram_json(tally.connect, "connect"),
        "errors": tally.errors,
        "status": {str(code): n for code, n in sorted(tally.statuses.items())},
        "messages": tally.messages,
        "series": [s.to_json() for s in series[:MAX_SERIES]],
    }
    if len(series) > MAX_SERIES:
        doc["series_cut"] = True
    if len(tally.steps):
        doc["steps"] = steps_json(tally.steps)
    if closed_loop:
        expected = expected_interval(answered, config.get("connections", 0), duration)
        corrected = lat.corrected(expected)
        doc["latency_corrected_ms"] = latency_json(corrected)
        doc |= histogram_json(corrected, "latency_corrected")
    return doc


def _size(n: float) -> str:
    """Bytes as wrk prints them: 512B, 1.50KB, 52.10MB, 3.00GB."""
    if n < 1024:
        return f"{n:.0f}B"
    for unit in ("KB", "MB"):
        n /= 1024
        if n < 1024:
            return f"{n:.2f}{unit}"
    return f"{n / 1024:.2f}GB"


def _stages_text(stages: list[list[float]]) -> str:
    return ",".join(f"{duration:g}s:{target:g}" for duration, target in stages)


def _latency_line(label: str, ms: dict[str, float]) -> str:
    return (
        f"  {label:<10} p50 {ms['p50']:.2f}ms  p75 {ms['p75']:.2f}ms  p90 {ms['p90']:.2f}ms  "
        f"p99 {ms['p99']:.2f}ms  p99.9 {ms['p999']:.2f}ms  max {ms['max']:.2f}ms  "
        f"mean {ms['mean']:.2f}ms"
    )


def text(doc: dict[str, Any], parts: int) -> str:
    """wrk's summary of a ``document``, with the percentiles wrk prints under --latency; a
    closed loop's latencies twice: as measured, and corrected as wrk corrects them."""
    config = doc["config"]
    errors = ", ".join(f"{kind} {doc['errors'][kind]:,}" for kind in ERROR_KINDS)
    statuses = ", ".join(f"{code} {n:,}" for code, n in doc["status"].items())
    rate = config.get("rate")
    lines = [
        f"  {parts} worker{'s' if parts > 1 else ''} and {config['connections']} connections"
        + (f", {rate:g} requests/s" if rate else "")
        + (f", stages {_stages_text(config['stages'])}" if config.get("stages") else ""),
        _latency_line("Latency", doc["latency_ms"]),
    ]
    if "latency_corrected_ms" in doc:
        lines[-1] = _latency_line("Measured", doc["latency_ms"])
        lines.append(_latency_line("Corrected", doc["latency_corrected_ms"]) + "  (as wrk)")
    connect = doc["connect_ms"]
    if connect["count"]:
        lines.append(
            f"  Connect    {connect['count']:,} connections  p50 {connect['p50']:.2f}ms  "
            f"p99 {connect['p99']:.2f}ms  max {connect['max']:.2f}ms"
        )
    lines.append(
        f"  {doc['answered']:,} requests in {doc['duration_s']:.2f}s, {_size(doc['bytes'])} read"
    )
    if doc["unanswered"]:
        lines.append(
            f"  Unanswered at the end: {doc['unanswered']:,} (never sent: {doc['dropped']:,})"
        )
    if doc["late"]:
        lines.append(f"  Behind schedule: {doc['late']:,} sends left over 10 ms late")
    lines += steps_text(doc.get("steps", {}))
    lines += [
        f"  Errors: {errors}",
        f"  Status: {statuses or 'none'}",
        f"Requests/sec: {doc['rps']:,.2f}",
        f"Transfer/sec: {_size(doc['bytes'] / doc['duration_s'] if doc['duration_s'] else 0)}",
    ]
    return "\n".join(lines)


def steps_text(steps: dict[str, Any]) -> list[str]:
    """A scenario's steps as a table (none when there are none), and where ``OTHER`` comes
    from, said once."""
    if not steps:
        return []
    width = max(12, *(len(name) for name in steps))
    lines = [
        f"  {'Step':<{width}} {'Requests':>10} {'Errors':>8} {'p50':>10} {'p90':>10} "
        f"{'p99':>10} {'max':>10}"
    ]
    for name, step in steps.items():
        lines.append(
            f"  {name:<{width}} {step['requests']:>10,} {step['errors']:>8,} "
            + " ".join(f"{step[key]:>8.2f}ms" for key in ("p50", "p90", "p99", "max"))
        )
    if OTHER in steps:
        lines.append(f"  {OTHER}: the steps past the first {MAX_STEPS} names, counted together")
    return lines

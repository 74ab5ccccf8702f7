"""``prefork load merge RUN.json...``: several runs' ``--json`` documents as one, exactly.

Counts add; the latency histograms (``latency_hdr``, with ``latency_us``'s exact count, sum,
min and max) add bucket by bucket, so the merged percentiles are those of every request of
every run; so do the connection set-up times (``connect_hdr``), wrk's corrected latencies
(``latency_corrected_hdr``: an open loop's measured ones stand for its corrected), the steps
and each second of the series (its p50 and p99 from the seconds' histograms added); the runs
are taken to have run side by side (started together with ``--start-at``): ``duration_s`` is
the longest, ``rps`` all the answers over it. A file that is not a run of ``prefork load
--json`` is refused in one line, whatever it holds.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from prefork.core._version import VERSION
from prefork.load._histogram import Histogram
from prefork.load._steps import MAX_STEP_NAME, MAX_STEPS, Step, Steps
from prefork.load._summary import MAX_SERIES, Second, histogram_json, latency_json, steps_json
from prefork.load._tally import ERROR_KINDS, MAX_MESSAGES

_COUNTS = ("requests", "answered", "unanswered", "sent", "dropped", "late", "bytes")
#: The largest run file read (a run's document is a few KB; its series an hour at most).
MAX_FILE = 64 << 20


USAGE = """usage: prefork load merge RUN.json...

Merge runs of `prefork load --json` (each file its last line) into one document, exactly:
counts add, latency histograms add bucket by bucket, runs are taken to have run side by side
(started together with --start-at). Prints one line of JSON."""


class BadRun(ValueError):
    """A document that is not a run of ``prefork load --json``."""


def _count(doc: dict[str, Any], key: str) -> int:
    n = doc.get(key)
    if type(n) is not int or n < 0:
        raise BadRun(f"{key!r} is not a count")
    return n


def _counts(d: Any, key: str) -> dict[str, int]:
    if not isinstance(d, dict) or not all(type(n) is int and n >= 0 for n in d.values()):
        raise BadRun(f"{key!r} is not counts by name")
    return d


def _number(doc: dict[str, Any], key: str) -> float:
    x = doc.get(key)
    if not isinstance(x, int | float) or isinstance(x, bool) or not 0 <= x < 1e12:
        raise BadRun(f"{key!r} is not a number of seconds")
    return float(x)


def _histogram(doc: dict[str, Any]) -> Histogram:
    h = _exact_histogram(doc)
    if h.count != doc["requests"]:
        raise BadRun("'latency_hdr' does not hold 'requests' values")
    return h


def _exact_histogram(doc: dict[str, Any], prefix: str = "latency") -> Histogram:
    """The histogram of ``latency_hdr`` with ``latency_us``'s exact count, sum, min, max (or
    another ``prefix``'s)."""
    exact, encoded = doc.get(f"{prefix}_us"), doc.get(f"{prefix}_hdr")
    if not isinstance(exact, dict) or not isinstance(encoded, str):
        raise BadRun(f"'{prefix}_us' or '{prefix}_hdr' is missing")
    try:
        h = Histogram.from_hdr(encoded, exact["sum"], exact["min"], exact["max"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRun(f"its {prefix} histogram: {str(exc)[:200]}") from None
    if h.count != exact.get("count"):
        raise BadRun(f"'{prefix}_hdr' does not hold '{prefix}_us' count values")
    return h


def _steps(d: Any) -> dict[str, Step]:
    """A run's ``steps`` (none when it has none)."""
    if d is None:
        return {}
    if not isinstance(d, dict) or len(d) > MAX_STEPS + 1:
        raise BadRun(f"'steps' is not at most {MAX_STEPS + 1} steps by name")
    out = {}
    for name, doc in d.items():
        if len(name) > MAX_STEP_NAME or not isinstance(doc, dict):
            raise BadRun(f"step {name!r:.120} is not a step")
        try:
            step = out[name] = Step()
            step.requests, step.errors = _count(doc, "requests"), _count(doc, "errors")
            step.latency = _exact_histogram(doc)
        except BadRun as exc:
            raise BadRun(f"step {name!r:.120}: {exc}") from None
        if step.errors > step.requests or step.latency.count > step.requests:
            raise BadRun(f"step {name!r:.120}: more errors or latencies than requests")
    return out


def merge(docs: list[Any]) -> dict[str, Any]:
    """One document of ``docs`` (at least one). Raises ``BadRun`` naming the first thing
    wrong, with the run's position (from 1)."""
    if not docs:
        raise BadRun("no run to merge")
    total = dict.fromkeys(_COUNTS, 0)
    errors = dict.fromkeys(ERROR_KINDS, 0)
    statuses: dict[str, int] = {}
    messages: dict[str, int] = {}
    series: dict[int, Second] = {}
    latency, connect, steps = Histogram(), Histogram(), Steps()
    corrected, any_corrected = Histogram(), False
    durations, starts, ends = [], [], []
    for position, doc in enumerate(docs, 1):
        try:
            if not isinstance(doc, dict):
                raise BadRun("not a JSON object")
            counts = {key: _count(doc, key) for key in _COUNTS}
            run_errors = _counts(doc.get("errors"), "errors")
            if set(run_errors) != set(ERROR_KINDS):
                raise BadRun(f"'errors' are not counts of {', '.join(ERROR_KINDS)}")
            run_statuses = _counts(doc.get("status"), "status")
            run_messages = _counts(doc.get("messages"), "messages")
            run_series = doc.get("series")
            if not isinstance(run_series, list) or len(run_series) > MAX_SERIES:
                raise BadRun(f"'series' is not a list of at most {MAX_SERIES} seconds")
            seconds = [_second(s) for s in run_series]
            h = _histogram(doc)
            run_connect = _exact_histogram(doc, "connect")
            # An open loop needs no correction: its measured latencies are its corrected.
            run_corrected = h
            if "latency_corrected_hdr" in doc:
                run_corrected = _exact_histogram(doc, "latency_corrected")
            times = [_number(doc, key) for key in ("duration_s", "started", "ended")]
            run_steps = _steps(doc.get("steps"))
        except BadRun as exc:
            raise BadRun(f"run {position}: {exc}") from None
        for key in _COUNTS:
            total[key] += counts[key]
        for kind in ERROR_KINDS:
            errors[kind] += run_errors[kind]
        for code, n in run_statuses.items():
            statuses[code[:8]] = statuses.get(code[:8], 0) + n
        for text, n in run_messages.items():
            text = text[:300]
            if text in messages or len(messages) < MAX_MESSAGES:
                messages[text] = messages.get(text, 0) + n
        for second in seconds:
            row = series.get(second.t)
            if row is None:
                series[second.t] = second
            else:
                row.latency.merge(second.latency)
                series[second.t] = Second(
                    row.t, row.answered + second.answered, row.errors + second.errors, row.latency
                )
        latency.merge(h)
        corrected.merge(run_corrected)
        any_corrected = any_corrected or "latency_corrected_hdr" in doc
        steps.absorb(run_steps)
        connect.merge(run_connect)
        durations.append(times[0])
        starts.append(times[1])
        ends.append(times[2])
    duration = max(durations)
    merged = {
        "version": VERSION,
        "runs": len(docs),
        "started": min(starts),
        "ended": max(ends),
        **total,
        "duration_s": duration,
        "rps": round(total["answered"] / duration, 3) if duration > 0 else 0.0,
        "latency_ms": latency_json(latency),
        **histogram_json(latency),
        "connect_ms": latency_json(connect) | {"count": connect.count},
        **histogram_json(connect, "connect"),
        "errors": errors,
        "status": dict(sorted(statuses.items())),
        "messages": messages,
        "series": [series[t].to_json() for t in sorted(series)][:MAX_SERIES],
    }
    if any_corrected:
        merged["latency_corrected_ms"] = latency_json(corrected)
        merged |= histogram_json(corrected, "latency_corrected")
    if len(steps):
        merged["steps"] = steps_json(steps)
    return merged


def _second(s: Any) -> Second:
    if not isinstance(s, dict):
        raise BadRun("a second of 'series' is not an object")
    t, answered, failed = s.get("t"), s.get("answered"), s.get("errors")
    if not all(type(n) is int and n >= 0 for n in (t, answered, failed)):
        raise BadRun("a second of 'series' has no t, answered and errors counts")
    try:
        return Second(t, answered, failed, _exact_histogram(s))  # type: ignore[arg-type]
    except BadRun as exc:
        raise BadRun(f"second {t} of 'series': {exc}") from None


def main(paths: list[str], out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """``prefork load merge``: prints the merged document (one line of JSON) on ``out``
    (stdout); 0, or 2 with one line on ``err`` (stderr) when a file cannot be read or is not
    a run."""
    out = out or sys.stdout
    err = err or sys.stderr
    if paths and paths[0] in ("-h", "--help"):
        print(USAGE, file=out)
        return 0
    if not paths:
        print("prefork: error: prefork load merge RUN.json... (at least one run)", file=err)
        return 2
    docs = []
    for path in paths:
        try:
            with open(path, "rb") as file:
                data = file.read(MAX_FILE + 1)
            if len(data) > MAX_FILE:
                raise ValueError(f"larger than {MAX_FILE >> 20} MiB")
            docs.append(json.loads(data))
        except (OSError, ValueError, RecursionError) as exc:
            print(f"prefork: error: {path}: cannot read a run: {str(exc)[:200]}", file=err)
            return 2
    try:
        merged = merge(docs)
    except BadRun as exc:
        print(f"prefork: error: {exc}", file=err)
        return 2
    print(json.dumps(merged), file=out)
    return 0

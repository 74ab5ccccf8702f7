"""What a load worker counts between two reports, and what the master adds up from them.

A worker ``record``s each response and each failed request, and every second sends
``report()`` (the counts since the last one) to the master, which ``absorb``s it into its own
tally: deltas, so a report lost with a dying worker loses one second, and every number the
master prints is an exact sum.
"""

from __future__ import annotations

from typing import Any

from prefork.load._histogram import Histogram

#: Why a request failed: no connection, the response could not be read or the request sent,
#: no answer within ``--timeout``, or an answer with a status >= 400.
ERROR_KINDS = ("connect", "read", "write", "timeout", "status")
_KEYS = {"requests", "bytes", "statuses", "errors", "latency"}


class Tally:
    """Counts of requests, bytes, statuses and errors by kind, and a latency histogram."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._requests = 0
        self._bytes = 0
        self._statuses: dict[int, int] = {}
        self._errors = dict.fromkeys(ERROR_KINDS, 0)
        self._latency = Histogram()

    def record(self, status: int, latency_us: int, nbytes: int) -> None:
        """One response with HTTP ``status``, ``latency_us`` microseconds after its (intended)
        send, of ``nbytes`` bytes. A status >= 400 is also an error of kind "status": wrk's
        rule, whose "Non-2xx or 3xx responses" are those above 399."""
        self._requests += 1
        self._bytes += nbytes
        statuses = self._statuses
        statuses[status] = statuses.get(status, 0) + 1
        self._latency.record(latency_us)
        if status >= 400:
            self._errors["status"] += 1

    def error(self, kind: str, latency_us: int | None = None) -> None:
        """A request that got no response, for reason ``kind`` ("connect", "read", "write" or
        "timeout"). ``latency_us``, when given, goes into the latency histogram: a timeout's
        wait belongs in the tail, or a stalled server would look fast. Raises ValueError on
        another kind ("status" errors are counted by ``record``)."""
        if kind not in ERROR_KINDS or kind == "status":
            raise ValueError(f"an error kind is connect, read, write or timeout, got {kind!r}")
        self._errors[kind] += 1
        if latency_us is not None:
            self._latency.record(latency_us)

    def report(self) -> dict[str, Any]:
        """A JSON-safe dict of everything counted since the last report, then start from zero."""
        out = {
            "requests": self._requests,
            "bytes": self._bytes,
            "statuses": {str(code): n for code, n in self._statuses.items()},
            "errors": dict(self._errors),
            "latency": self._latency.to_json(),
        }
        self._reset()
        return out

    def absorb(self, report: Any) -> None:
        """Add a worker's ``report()`` to this tally. Raises ValueError, changing nothing, when
        the report is malformed or does not add up (it comes from another process)."""
        if not isinstance(report, dict) or set(report) != _KEYS:
            raise ValueError(f"not a load report: {report!r:.200}")
        latency = Histogram.from_json(report["latency"])
        requests, nbytes = report["requests"], report["bytes"]
        statuses, errors = report["statuses"], report["errors"]
        if not (_is_counts(errors) and set(errors) == set(ERROR_KINDS)):
            raise ValueError(f"a report's errors are counts of {ERROR_KINDS}: {errors!r:.200}")
        if not (_is_counts(statuses) and all(_is_code(s) for s in statuses)):
            raise ValueError(f"a report's statuses are counts by code: {statuses!r:.200}")
        codes = {int(s): n for s, n in statuses.items()}
        failed = sum(errors.values()) - errors["status"]
        consistent = (
            _is_counts({"requests": requests, "bytes": nbytes})
            and sum(codes.values()) == requests
            and sum(n for code, n in codes.items() if code >= 400) == errors["status"]
            and requests <= latency.count <= requests + failed
        )
        if not consistent:
            raise ValueError(f"a load report that does not add up: {report!r:.200}")
        self._requests += requests
        self._bytes += nbytes
        for code, n in codes.items():
            self._statuses[code] = self._statuses.get(code, 0) + n
        for kind, n in errors.items():
            self._errors[kind] += n
        self._latency.merge(latency)

    @property
    def requests(self) -> int:
        """Responses received (whatever their status)."""
        return self._requests

    @property
    def bytes(self) -> int:
        """Bytes of the responses received."""
        return self._bytes

    @property
    def statuses(self) -> dict[int, int]:
        """Responses by status code (a copy)."""
        return dict(self._statuses)

    @property
    def errors(self) -> dict[str, int]:
        """Failed requests by kind, every kind of ``ERROR_KINDS`` present (a copy)."""
        return dict(self._errors)

    @property
    def failed(self) -> int:
        """Every error: requests without a response, and responses with a status >= 400."""
        return sum(self._errors.values())

    @property
    def latency(self) -> Histogram:
        """The latency histogram in microseconds: the tally's own (read it, do not change it),
        a new one after each ``report()``."""
        return self._latency

    def summary_json(self, duration_s: float) -> dict[str, Any]:
        """The ``--json`` summary of a run of ``duration_s`` seconds (README: "prefork load"):
        requests, duration_s, rps, bytes, latency_ms (p50, p75, p90, p99, p999, max, mean),
        errors by kind and status counts by code (as strings, in order). Raises ValueError
        when ``duration_s`` is negative."""
        if not duration_s >= 0:
            raise ValueError(f"a duration is >= 0 seconds, got {duration_s}")
        lat = self._latency
        marks = {"p50": 50, "p75": 75, "p90": 90, "p99": 99, "p999": 99.9}
        latency_ms = {name: lat.percentile(p) / 1000 for name, p in marks.items()}
        latency_ms |= {"max": lat.max / 1000, "mean": round(lat.mean() / 1000, 3)}
        return {
            "requests": self._requests,
            "duration_s": float(duration_s),
            "rps": round(self._requests / duration_s, 3) if duration_s else 0.0,
            "bytes": self._bytes,
            "latency_ms": latency_ms,
            "errors": dict(self._errors),
            "status": {str(code): self._statuses[code] for code in sorted(self._statuses)},
        }


def _is_counts(d: Any) -> bool:
    """A dict of ints >= 0 (not bools: a count is never True)."""
    return isinstance(d, dict) and all(type(n) is int and n >= 0 for n in d.values())


def _is_code(s: Any) -> bool:
    """A status code as ``report`` writes it: digits, as ``str(int)`` spells them."""
    return isinstance(s, str) and s.isascii() and s.isdigit() and str(int(s)) == s

"""What a load worker counts between two reports, and what the master adds up from them.

A worker ``record``s each response, each failed request and, at the end, each request left
unanswered, and every second sends ``report()`` (the counts since the last one) to the
master, which ``absorb``s it into its own tally: deltas, so a report lost with a dying worker
loses one second, and every number the master prints is an exact sum.

The latency histogram holds every answered request and every request unanswered at the end
(its wait up to the end); a failed request is counted by its kind, never as a latency.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from prefork.load import _steps
from prefork.load._histogram import Histogram

#: Why a request failed: no connection, the response could not be read or the request sent,
#: no answer within ``--timeout``, or an answer with a status >= 400.
ERROR_KINDS = ("connect", "read", "write", "timeout", "status")
#: The counters beside the responses: requests written, sent late (an open loop behind its
#: schedule: ``_client.LATE_NS``), still unanswered at the end, and of those the ones never
#: sent (an open loop's sends waiting for a free connection: k6's dropped iterations).
COUNTERS = ("sent", "late", "unanswered", "dropped")
_KEYS = {"requests", "bytes", "statuses", "errors", "latency", "connect", "messages", "steps"}
_KEYS |= set(COUNTERS)
#: Distinct error messages kept per report: a server failing in new ways each time is said
#: by the first ones.
MAX_MESSAGES = 20
#: The longest error message kept (a server's words can be long): the rest is cut.
MAX_MESSAGE = 300
#: Answered requests' latencies wait in a list until this many (or until read): binning them
#: then, each distinct value once with its count, costs a fraction of binning each response.
BIN_EVERY = 65536


class Tally:
    """Counts of requests, bytes, statuses, errors by kind and the counters of ``COUNTERS``,
    a latency histogram, connection set-up times and error messages.

    ``sent`` and ``late`` are plain attributes the drivers add to (the hot path)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._requests = 0
        self._bytes = 0
        self._statuses: dict[int, int] = {}
        self._errors = dict.fromkeys(ERROR_KINDS, 0)
        self._latency = Histogram()
        self._pending: list[int] = []  # answered requests' latencies, not yet in _latency
        self._connect = Histogram()
        self._messages: dict[str, int] = {}
        self._steps = _steps.Steps()
        self.sent = 0
        self.late = 0
        self._unanswered = 0
        self._dropped = 0

    def record(self, status: int, latency_us: int, nbytes: int) -> None:
        """One response with HTTP ``status``, ``latency_us`` microseconds after its (intended)
        send, of ``nbytes`` bytes. A status >= 400 is also an error of kind "status": wrk's
        rule, whose "Non-2xx or 3xx responses" are those above 399."""
        # The hot path (once per response): requests are counted when the latencies are binned.
        pending = self._pending
        pending.append(latency_us)
        self._bytes += nbytes
        statuses = self._statuses
        statuses[status] = statuses.get(status, 0) + 1
        if status >= 400:
            self._errors["status"] += 1
        if len(pending) >= BIN_EVERY:
            self._bin()

    def _bin(self) -> None:
        """Move the pending latencies into the histogram, each distinct value once."""
        pending = self._pending
        self._requests += len(pending)
        record = self._latency.record
        for latency_us, count in Counter(pending).items():
            record(latency_us, count)
        pending.clear()

    def error(self, kind: str) -> None:
        """A request that got no response, for reason ``kind`` ("connect", "read", "write" or
        "timeout"): counted, kept out of the latency histogram. Raises ValueError on another
        kind ("status" errors are counted by ``record``)."""
        if kind not in ERROR_KINDS or kind == "status":
            raise ValueError(f"an error kind is connect, read, write or timeout, got {kind!r}")
        self._errors[kind] += 1

    def unanswered(self, latency_us: int, sent: bool = True) -> None:
        """A request still unanswered when the run ended, ``latency_us`` after its (intended)
        send: in the latency histogram, and counted apart (and as dropped when never sent)."""
        self._unanswered += 1
        self._dropped += not sent
        self._latency.record(latency_us)

    def connected(self, latency_us: int) -> None:
        """A connection set up (TCP, and TLS when https) in ``latency_us``."""
        self._connect.record(latency_us)

    def step(self, name: str, latency_us: int | None, failed: bool) -> None:
        """A scenario's request of step ``name`` (``_steps``), recorded there too: its latency
        (None when it failed without a response) and whether it failed."""
        self._steps.record(name, latency_us, failed)

    def message(self, text: str) -> None:
        """An error message, counted (``MAX_MESSAGES`` distinct ones at most per report, each
        cut to ``MAX_MESSAGE`` characters)."""
        text = text[:MAX_MESSAGE]
        messages = self._messages
        if text in messages or len(messages) < MAX_MESSAGES:
            messages[text] = messages.get(text, 0) + 1

    def report(self) -> dict[str, Any]:
        """A JSON-safe dict of everything counted since the last report, then start from zero."""
        self._bin()
        out = {
            "requests": self._requests,
            "bytes": self._bytes,
            "statuses": {str(code): n for code, n in self._statuses.items()},
            "errors": dict(self._errors),
            "latency": self._latency.to_json(),
            "connect": self._connect.to_json(),
            "messages": dict(self._messages),
            "steps": self._steps.to_json(),
            "sent": self.sent,
            "late": self.late,
            "unanswered": self._unanswered,
            "dropped": self._dropped,
        }
        self._reset()
        return out

    def absorb(self, report: Any) -> None:
        """Add a worker's ``report()`` to this tally. Raises ValueError, changing nothing, when
        the report is malformed or does not add up (it comes from another process)."""
        if not isinstance(report, dict) or set(report) != _KEYS:
            raise ValueError(f"not a load report: {report!r:.200}")
        latency = Histogram.from_json(report["latency"])
        connect = Histogram.from_json(report["connect"])
        requests, nbytes = report["requests"], report["bytes"]
        statuses, errors = report["statuses"], report["errors"]
        counters = {name: report[name] for name in COUNTERS}
        if not (_is_counts(errors) and set(errors) == set(ERROR_KINDS)):
            raise ValueError(f"a report's errors are counts of {ERROR_KINDS}: {errors!r:.200}")
        if not (_is_counts(statuses) and all(_is_code(s) for s in statuses)):
            raise ValueError(f"a report's statuses are counts by code: {statuses!r:.200}")
        messages = report["messages"]
        if (
            not _is_counts(messages)
            or len(messages) > MAX_MESSAGES
            or any(len(text) > MAX_MESSAGE for text in messages)
        ):
            raise ValueError(
                f"a report's messages are at most {MAX_MESSAGES} counts: {report!r:.200}"
            )
        steps = _steps.from_json(report["steps"])
        codes = {int(s): n for s, n in statuses.items()}
        consistent = (
            _is_counts({"requests": requests, "bytes": nbytes, **counters})
            and sum(codes.values()) == requests
            and sum(n for code, n in codes.items() if code >= 400) == errors["status"]
            and latency.count == requests + counters["unanswered"]
            and counters["dropped"] <= counters["unanswered"]
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
        self._connect.merge(connect)
        for text, n in messages.items():
            if text in self._messages or len(self._messages) < MAX_MESSAGES:
                self._messages[text] = self._messages.get(text, 0) + n
        self._steps.absorb(steps)
        self.sent += counters["sent"]
        self.late += counters["late"]
        self._unanswered += counters["unanswered"]
        self._dropped += counters["dropped"]

    @property
    def requests(self) -> int:
        """Responses received (whatever their status)."""
        self._bin()
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
    def succeeded(self) -> int:
        """Responses with a status below 400."""
        self._bin()
        return self._requests - self._errors["status"]

    @property
    def unanswered_count(self) -> int:
        """Requests unanswered when the run ended (sent or not)."""
        return self._unanswered

    @property
    def dropped(self) -> int:
        """Requests due by the end that were never sent (an open loop behind schedule)."""
        return self._dropped

    @property
    def latency(self) -> Histogram:
        """The latency histogram in microseconds: the tally's own (read it, do not change it),
        a new one after each ``report()``."""
        self._bin()
        return self._latency

    @property
    def connect(self) -> Histogram:
        """Connection set-up times in microseconds (the tally's own)."""
        return self._connect

    @property
    def messages(self) -> dict[str, int]:
        """Error messages and how often each was seen (a copy)."""
        return dict(self._messages)

    @property
    def steps(self) -> _steps.Steps:
        """A scenario's steps (the tally's own: read it, do not change it)."""
        return self._steps


def _is_counts(d: Any) -> bool:
    """A dict of ints >= 0 (not bools: a count is never True)."""
    return isinstance(d, dict) and all(type(n) is int and n >= 0 for n in d.values())


def _is_code(s: Any) -> bool:
    """A status code as ``report`` writes it: digits, as ``str(int)`` spells them."""
    return isinstance(s, str) and s.isascii() and s.isdigit() and str(int(s)) == s

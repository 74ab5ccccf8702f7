"""The HTTP worker's metrics: counted as requests go, reported to the master about once a second.

Rule 1: the counting is on every request's path, so it is plain attribute and list increments
on one ``Stats`` object: no allocation but the duration's float, no lookup but one ``dict.get``
(and a bisect for the requests slower than the first bucket).
Rule 2: ``take`` (on the worker's sweep timer, ``ServerState``) builds the report in the shape
the master reads (``Worker.report``: ``status`` and ``metrics``) and resets the increments; it
gives None when nothing changed, so an idle worker sends nothing and an idle master sleeps. The
first report goes out even so: the master shows 0 requests for this worker rather than none.

Counters and the histogram are sent as increases since the previous report, gauges as their
current value. The names are a contract (the README documents them):

- ``prefork_http_requests_total{method, status}``: responses completed (status as ``2xx``);
- ``prefork_http_refused_total{status}``: requests the server answered itself before any app
  ran (400, 408, 413, 431, 503, ...);
- ``prefork_http_request_duration_seconds``: from the app's start (the head is parsed) to the
  last byte of the response handed to the transport;
- ``prefork_http_requests_in_flight``, ``prefork_http_connections``,
  ``prefork_http_websockets``: gauges;
- ``prefork_http_received_bytes_total``, ``prefork_http_sent_bytes_total``.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

#: Upper bounds (seconds) of ``prefork_http_request_duration_seconds``; the last bucket is above.
DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FIRST_BOUND = DURATION_BOUNDS[0]

#: Methods counted by name; any other is ``other``, so clients cannot add series at will.
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

HELP = {
    "prefork_http_requests_total": "HTTP responses completed, by method and status class.",
    "prefork_http_refused_total": "HTTP requests the server answered itself before any app ran.",
    "prefork_http_request_duration_seconds": "Seconds from a request's head to its last byte out.",
    "prefork_http_requests_in_flight": "ASGI apps running now (WebSockets included).",
    "prefork_http_connections": "Open HTTP connections.",
    "prefork_http_websockets": "Open WebSockets.",
    "prefork_http_received_bytes_total": "Bytes read from HTTP clients.",
    "prefork_http_sent_bytes_total": "Bytes written to HTTP clients.",
}


def _sample(
    name: str, kind: str, labels: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    sample: dict[str, Any] = {"name": name, "type": kind, **fields}
    if labels:
        sample["labels"] = labels
    sample["help"] = HELP[name]
    return sample


class Stats:
    """One worker's counts since its last report, and the gauges it last reported.

    The connections add to ``received`` and ``sent`` (bytes) and ``websockets`` (accepted, not
    closed yet) directly, and call ``responded`` / ``refused`` once per answer.
    """

    __slots__ = (
        "_last",
        "_other",
        "_rows",
        "duration_sum",
        "durations",
        "received",
        "refusals",
        "sent",
        "websockets",
    )

    def __init__(self) -> None:
        # Responses by method, each row indexed by status // 100 (the status is 100..599).
        self._rows = {method: [0] * 6 for method in METHODS}
        self._other = [0] * 6
        self.refusals: dict[int, int] = {}
        self.durations = [0] * (len(DURATION_BOUNDS) + 1)  # non-cumulative, as reported
        self.duration_sum = 0.0
        self.received = 0
        self.sent = 0
        self.websockets = 0
        self._last: tuple[int, int, int, int] | None = None  # status and gauges last reported

    def responded(self, method: str, status: int, seconds: float) -> None:
        """A response with ``status`` was completed ``seconds`` after its request began."""
        (self._rows.get(method) or self._other)[status // 100] += 1
        if seconds <= _FIRST_BOUND:  # most requests: a compare instead of a bisect
            self.durations[0] += 1
        else:
            self.durations[bisect_left(DURATION_BOUNDS, seconds)] += 1
        self.duration_sum += seconds

    def refused(self, status: int) -> None:
        """The server answered ``status`` to a request before any app ran."""
        self.refusals[status] = self.refusals.get(status, 0) + 1

    def take(self, requests: int, connections: int, inflight: int) -> dict[str, Any] | None:
        """The report for ``Worker.report`` (and the increments start again from zero), or
        None when nothing changed since the previous one. ``requests``: admitted since the
        worker started; ``connections``: open now, WebSockets included; ``inflight``: apps
        running."""
        current = (requests, connections, inflight, self.websockets)
        observed = any(self.durations)
        counted = self.received or self.sent or self.refusals or observed
        if current == self._last and not counted:
            return None
        self._last = current
        metrics: list[dict[str, Any]] = []
        for method, row in (*self._rows.items(), ("other", self._other)):
            for status_class, count in enumerate(row):
                if count:
                    labels = {"method": method, "status": f"{status_class}xx"}
                    metrics.append(
                        _sample("prefork_http_requests_total", "counter", labels, value=count)
                    )
                    row[status_class] = 0
        for status, count in sorted(self.refusals.items()):
            labels = {"status": str(status)}
            metrics.append(_sample("prefork_http_refused_total", "counter", labels, value=count))
        self.refusals.clear()
        if observed:
            metrics.append(
                _sample(
                    "prefork_http_request_duration_seconds",
                    "histogram",
                    buckets=list(DURATION_BOUNDS),
                    counts=self.durations,
                    sum=self.duration_sum,
                )
            )
            self.durations = [0] * len(self.durations)
            self.duration_sum = 0.0
        websockets = self.websockets
        metrics.append(_sample("prefork_http_requests_in_flight", "gauge", value=inflight))
        metrics.append(_sample("prefork_http_connections", "gauge", value=connections - websockets))
        metrics.append(_sample("prefork_http_websockets", "gauge", value=websockets))
        if self.received:
            metrics.append(
                _sample("prefork_http_received_bytes_total", "counter", value=self.received)
            )
        if self.sent:
            metrics.append(_sample("prefork_http_sent_bytes_total", "counter", value=self.sent))
        self.received = self.sent = 0
        return {"status": {"requests": requests, "connections": connections}, "metrics": metrics}

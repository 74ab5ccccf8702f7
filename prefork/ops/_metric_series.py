"""The series the metric store keeps (``_metrics.py``), and the exposition of its families
printed piece by piece, so that a scrape of any size holds one piece at a time.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import ClassVar, Generic, TypeVar

from prefork.ops import _metrics_text as fmt
from prefork.ops._metrics_text import Key


class Counter:
    __slots__ = ("labels", "size", "total")
    kind: ClassVar = "counter"

    def __init__(self, labels: str) -> None:
        self.labels = labels  # escaped pairs, as printed between the braces
        self.size = 0  # the bytes it is charged against max_bytes (a worker's series)
        self.total = 0.0


class Gauge:
    __slots__ = ("by_worker", "labels", "size")
    kind: ClassVar = "gauge"

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.size = 0
        self.by_worker: dict[int, float] = {}


class Histogram:
    __slots__ = ("bounds", "counts", "labels", "size", "sum")
    kind: ClassVar = "histogram"

    def __init__(self, labels: str, bounds: list[float]) -> None:
        self.labels = labels
        self.size = 0
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, NOT cumulative; the last is +Inf
        self.sum = 0.0


S = TypeVar("S", Counter, Gauge, Histogram)


class Family(Generic[S]):
    """The series of one metric name, and what the name is: type, help and owner."""

    __slots__ = ("by_master", "help", "kind", "series", "size")

    def __init__(self, kind: str, help: str, *, by_master: bool) -> None:
        self.kind = kind
        self.help = help
        self.by_master = by_master
        self.series: dict[Key, S] = {}
        self.size = 0  # the bytes of its header lines (a workers' family)


def pieces(
    counters: Mapping[str, Family[Counter]],
    gauges: Mapping[str, Family[Gauge]],
    histograms: Mapping[str, Family[Histogram]],
    size: int = 65536,
) -> Iterator[str]:
    """The exposition of these families in the Prometheus text format 0.0.4, in pieces of
    about ``size`` characters, each made when the one before it has been taken. What changes
    in between is shown as it is then: a family or series gone meanwhile is left out, one
    that came is not shown. Families sorted by name, series by labels; a family with no
    series is left out. Every line ends with a newline."""
    out: list[str] = []
    length = 0
    for name in sorted(counters.keys() | gauges.keys() | histograms.keys()):
        for line in _family_lines(name, counters, gauges, histograms):
            out.append(line)
            length += len(line) + 1
            if length >= size:
                yield "\n".join(out) + "\n"
                out, length = [], 0
    if out:
        yield "\n".join(out) + "\n"


def _family_lines(
    name: str,
    counters: Mapping[str, Family[Counter]],
    gauges: Mapping[str, Family[Gauge]],
    histograms: Mapping[str, Family[Histogram]],
) -> Iterator[str]:
    """The lines of the family ``name``, one series at a time."""
    # Counter and histogram series are never removed from their family (a dropped family is
    # let go whole); gauge series go with their workers, and the master replaces its own.
    head: list[str] = []
    if (counter_family := counters.get(name)) is not None:
        fmt.header(head, name, counter_family.help, "counter")
        yield from head
        for key in sorted(counter_family.series):
            counter = counter_family.series[key]
            yield fmt.sample_line(name, counter.labels, counter.total)
    elif (gauge_family := gauges.get(name)) is not None:
        if gauge_family.series:  # only the master's gauges can have none: a worker's go
            fmt.header(head, name, gauge_family.help, "gauge")
        yield from head
        for key in sorted(gauge_family.series):
            if (gauge := gauge_family.series.get(key)) is not None:
                yield fmt.sample_line(name, gauge.labels, sum(gauge.by_worker.values()))
    elif (histogram_family := histograms.get(name)) is not None:
        fmt.header(head, name, histogram_family.help, "histogram")
        yield from head
        for key in sorted(histogram_family.series):
            h = histogram_family.series[key]
            lines: list[str] = []
            fmt.histogram_lines(lines, name, h.labels, h.bounds, h.counts, h.sum)
            yield from lines

"""The series the metric store keeps (``_metrics.py``), and the exposition of its families
printed piece by piece, so that a scrape of any size holds one piece at a time.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Generic, TypeVar

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


def family_doc(family: Family[Any]) -> dict[str, Any]:
    """``family`` as plain data (``family_of`` takes it back): what the metric store hands
    the next image of the master across an in-place upgrade."""
    series = []
    for key, s in family.series.items():
        doc: dict[str, Any] = {"key": [list(pair) for pair in key]}
        doc.update((name, getattr(s, name)) for name in s.__slots__)
        if isinstance(s, Gauge):
            doc["by_worker"] = [[worker, value] for worker, value in s.by_worker.items()]
        series.append(doc)
    return {
        "kind": family.kind,
        "help": family.help,
        "by_master": family.by_master,
        "size": family.size,
        "series": series,
    }


def family_of(doc: Mapping[str, Any]) -> Family[Any]:
    """The family ``family_doc`` made; ``KeyError``, ``TypeError`` or ``ValueError`` if
    ``doc`` is not one."""
    kind = doc["kind"]
    family: Family[Any] = Family(kind, str(doc["help"]), by_master=doc["by_master"] is True)
    family.size = int(doc["size"])
    for item in doc["series"]:
        key = tuple((str(name), str(value)) for name, value in item["key"])
        labels = str(item["labels"])
        s: Counter | Gauge | Histogram
        if kind == "counter":
            s = Counter(labels)
            s.total = float(item["total"])
        elif kind == "gauge":
            s = Gauge(labels)
            s.by_worker = {int(worker): float(value) for worker, value in item["by_worker"]}
        elif kind == "histogram":
            s = Histogram(labels, [float(b) for b in item["bounds"]])
            s.counts = [int(c) for c in item["counts"]]
            s.sum = float(item["sum"])
            if len(s.counts) != len(s.bounds) + 1:
                raise ValueError(
                    f"a histogram of {len(s.bounds)} bounds has {len(s.counts)} counts"
                )
        else:
            raise ValueError(f"no metric type {kind!r}")
        s.size = int(item["size"])
        family.series[key] = s
    return family


#: The tables of a metric store, by kind, as ``MetricStore.export`` names them.
KINDS = ("counters", "gauges", "histograms")
#: Where a worker's gauge values are: (name, family, series key) per worker id.
GaugesOf = dict[int, list[tuple[str, Family[Gauge], Key]]]


def charges(
    counters: Mapping[str, Family[Any]],
    gauges: Mapping[str, Family[Any]],
    histograms: Mapping[str, Family[Any]],
) -> tuple[int, int, GaugesOf]:
    """What the workers' families cost a metric store (its ``_bytes`` and ``_series``), and
    which gauge values each worker holds: the store's accounting, rebuilt from families
    taken over (``family_of``). The master's own families cost nothing."""
    size = count = 0
    gauges_of: GaugesOf = {}
    for table in (counters, gauges, histograms):
        for name, family in table.items():
            if family.by_master:
                continue
            size += family.size + sum(s.size for s in family.series.values())
            for key, series in family.series.items():
                if not isinstance(series, Gauge):
                    count += 1
                    continue
                count += len(series.by_worker)
                for worker_id in series.by_worker:
                    gauges_of.setdefault(worker_id, []).append((name, family, key))
    return size, count, gauges_of

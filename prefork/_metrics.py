"""The master's metric store: what workers report, added up, rendered for Prometheus.

Pure: no I/O, no clock. Workers are not trusted. Every sample is checked before it touches the
store; a bad one is refused with a one-line reason and the others still apply; the series the
workers create are capped. So a confused or hostile worker can neither make the master raise
nor grow its memory without bound, and whatever strings it sends render safely (spec,
section 1).

Counters and histograms are totals that outlive the worker that reported them (they survive
recycling). Gauges are each worker's current value, rendered as the sum over the live workers,
and vanish with the worker (``forget``). The master's own metrics go through ``inc``,
``observe`` and ``set_gauges``; a name the master uses is its own from then on (a worker's
family of that name is dropped, and later samples for it are refused), so a worker cannot
disguise itself as the master's bookkeeping.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from prefork import _metrics_text as fmt
from prefork._metrics_text import Key

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_MASTER = -1  # the "worker" that holds the value of one of the master's own gauges
_WORKER_RESERVED = frozenset({"broker"})  # the master adds broker="<type>" itself
_WORKER_RESERVED_HISTOGRAM = frozenset({"broker", "le"})
_MASTER_RESERVED_HISTOGRAM = frozenset({"le"})


class _Counter:
    __slots__ = ("labels", "total")
    kind: ClassVar = "counter"

    def __init__(self, labels: str) -> None:
        self.labels = labels  # escaped pairs, as printed between the braces
        self.total = 0.0


class _Gauge:
    __slots__ = ("by_worker", "labels")
    kind: ClassVar = "gauge"

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.by_worker: dict[int, float] = {}


class _Histogram:
    __slots__ = ("bounds", "counts", "labels", "sum")
    kind: ClassVar = "histogram"

    def __init__(self, labels: str, bounds: list[float]) -> None:
        self.labels = labels
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, NOT cumulative; the last is +Inf
        self.sum = 0.0


S = TypeVar("S", _Counter, _Gauge, _Histogram)


class _Family(Generic[S]):
    """The series of one metric name, and what the name is: type, help and owner."""

    __slots__ = ("by_master", "help", "kind", "series")

    def __init__(self, kind: str, help: str, *, by_master: bool) -> None:
        self.kind = kind
        self.help = help
        self.by_master = by_master
        self.series: dict[Key, S] = {}


class MetricStore:
    """Every metric the master exports: the workers' reports added up, and its own."""

    def __init__(self, *, max_series: int = 10_000) -> None:
        self.max_series = max_series
        self._counters: dict[str, _Family[_Counter]] = {}
        self._gauges: dict[str, _Family[_Gauge]] = {}
        self._histograms: dict[str, _Family[_Histogram]] = {}
        # What the cap counts: the workers' counter and histogram series, and each worker's
        # value of each gauge series (that is what takes memory). The master's own series are
        # bounded by its configuration and are not counted, so a flood cannot hide them.
        self._series = 0
        self._gauges_of: dict[int, list[tuple[str, _Family[_Gauge], Key]]] = {}
        # A gauge is a sum over at most max_series values: each under this, the sum stays
        # finite (half the largest float, so that rounding cannot tip it over).
        self._gauge_limit = sys.float_info.max / (2 * max(1, max_series))

    # -- what workers report ------------------------------------------------------------------

    def report(self, broker: str, worker_id: int, samples: object) -> list[str]:
        """Apply the ``"metrics"`` value of a worker's report: a list of sample dicts.

        Adds the label ``broker=<broker>`` to each series. Returns one line per refused sample
        saying what is wrong with it (the good samples still apply); a value that is not a
        list is one refusal, and None (no metrics) none. Never raises.
        """
        if samples is None:
            return []
        if type(samples) is not list:
            return [f"'metrics' must be a list of samples, not {fmt.describe(samples)}"]
        refusals = []
        for sample in samples:
            reason = self._apply(broker, worker_id, sample)
            if reason is not None:
                refusals.append(reason)
        return refusals

    def forget(self, worker_id: int) -> None:
        """The worker left: its gauge values vanish (its counters and histograms stay)."""
        for name, family, key in self._gauges_of.pop(worker_id, ()):
            series = family.series[key]
            if series.by_worker.pop(worker_id, None) is None:
                continue  # the master took the name over, and the value went with it
            self._series -= 1
            if not series.by_worker:
                del family.series[key]
                if not family.series:
                    del self._gauges[name]

    def _apply(self, broker: str, worker_id: int, sample: object) -> str | None:
        if type(sample) is not dict:
            return f"a sample must be an object, not {fmt.describe(sample)}"
        name = sample.get("name")
        if type(name) is not str:
            return f"a sample's 'name' must be a string, not {fmt.describe(name)}"
        kind = sample.get("type")
        if kind == "counter":
            reason = self._count(name, broker, sample)
        elif kind == "gauge":
            reason = self._gauge(name, broker, worker_id, sample)
        elif kind == "histogram":
            reason = self._histogram(name, broker, sample)
        else:
            reason = f"has the type {fmt.describe(kind)}, not counter, gauge or histogram"
        return None if reason is None else f"metric {fmt.describe(name)} {reason}"

    def _count(self, name: str, broker: str, sample: dict[Any, Any]) -> str | None:
        value = fmt.finite(sample.get("value"))
        if value is None or value < 0:
            return f"needs a 'value' >= 0 (finite), not {fmt.describe(sample.get('value'))}"
        head = self._head(self._counters, name, "counter", broker, sample)
        if isinstance(head, str):
            return head
        key, help, series = head
        if series is None:
            if (reason := self._admit(sample, _WORKER_RESERVED)) is not None:
                return reason
            series = self._attach(self._counters, name, help, key, _Counter(fmt.label_text(key)))
        elif not math.isfinite(series.total + value):
            return "would overflow its total"
        series.total += value
        return None

    def _gauge(self, name: str, broker: str, worker_id: int, sample: dict[Any, Any]) -> str | None:
        value = fmt.finite(sample.get("value"))
        if value is None or abs(value) > self._gauge_limit:
            return (
                f"needs a 'value' that is a finite number within {self._gauge_limit:.3g} "
                f"of 0, not {fmt.describe(sample.get('value'))}"
            )
        head = self._head(self._gauges, name, "gauge", broker, sample)
        if isinstance(head, str):
            return head
        key, help, series = head
        if series is None:
            if (reason := self._admit(sample, _WORKER_RESERVED)) is not None:
                return reason
            series = self._attach(self._gauges, name, help, key, _Gauge(fmt.label_text(key)))
            self._remember(worker_id, name, key)
        elif worker_id not in series.by_worker:
            if (reason := self._full()) is not None:
                return reason
            self._series += 1
            self._remember(worker_id, name, key)
        series.by_worker[worker_id] = value
        return None

    def _remember(self, worker_id: int, name: str, key: Key) -> None:
        """Note that the worker holds a value of this gauge series, for ``forget``."""
        self._gauges_of.setdefault(worker_id, []).append((name, self._gauges[name], key))

    def _histogram(self, name: str, broker: str, sample: dict[Any, Any]) -> str | None:
        total = fmt.finite(sample.get("sum"))
        if total is None:
            return f"needs a finite number as 'sum', not {fmt.describe(sample.get('sum'))}"
        head = self._head(self._histograms, name, "histogram", broker, sample)
        if isinstance(head, str):
            return head
        key, help, series = head
        buckets = sample.get("buckets")
        if series is None:
            bounds = fmt.bounds_of(buckets)
            if isinstance(bounds, str):
                return bounds
        elif buckets != series.bounds:
            return "has buckets that differ from the ones this series started with"
        else:
            bounds = series.bounds
        counts = fmt.counts_of(sample.get("counts"), len(bounds) + 1)
        if isinstance(counts, str):
            return counts
        if series is None:
            if (reason := self._admit(sample, _WORKER_RESERVED_HISTOGRAM)) is not None:
                return reason
            new = _Histogram(fmt.label_text(key), bounds)
            series = self._attach(self._histograms, name, help, key, new)
        elif not math.isfinite(series.sum + total):
            return "would overflow its sum"
        series.sum += total
        for i, count in enumerate(counts):
            series.counts[i] += count
        return None

    def _head(
        self,
        table: dict[str, _Family[S]],
        name: str,
        kind: str,
        broker: str,
        sample: dict[Any, Any],
    ) -> tuple[Key, str, S | None] | str:
        """What a sample says of its family, and its labels: (key, help, the series if it is
        stored already), or why it is refused."""
        family = table.get(name)
        if family is None:
            if (reason := self._name_refusal(name, kind)) is not None:
                return reason
        elif family.by_master:
            return "is one of the master's own metrics"
        head = fmt.help_and_key(sample, broker)
        if isinstance(head, str):
            return head
        key, help = head
        if family is None:
            return key, help, None
        if not family.help:
            family.help = help  # the first help seen for the name wins
        return key, help, family.series.get(key)

    def _name_refusal(self, name: str, kind: str) -> str | None:
        """Why a worker cannot start a family ``name`` of ``kind`` (None: it can)."""
        if not fmt.good_name(name):
            return "has a bad name (it must match [a-zA-Z_:][a-zA-Z0-9_:]*, not start with __)"
        other = self._any_family(name)
        if other is not None:
            return f"is a {other.kind}, not a {kind}"
        clashes = self._clashes(name, kind)
        if clashes:
            return f"would print lines of the same name as the family {clashes[0]!r}"
        return None

    def _admit(self, sample: dict[Any, Any], reserved: frozenset[str]) -> str | None:
        """Why a sample's new series cannot be stored (None: it can)."""
        labels = sample.get("labels")
        reason = None if labels is None else fmt.label_refusal(labels.items(), reserved)
        return reason or self._full()

    def _full(self) -> str | None:
        if self._series >= self.max_series:
            return f"would start a new series, and the store holds its limit of {self.max_series}"
        return None

    def _attach(self, table: dict[str, _Family[S]], name: str, help: str, key: Key, series: S) -> S:
        """A new worker series (and family, the first time), counted against the cap."""
        family = table.get(name)
        if family is None:
            family = table[name] = _Family(series.kind, help, by_master=False)
        family.series[key] = series
        self._series += 1
        return series

    # -- the master's own metrics ---------------------------------------------------------------

    def inc(self, name: str, labels: Mapping[str, str], value: float = 1.0, help: str = "") -> None:
        """Add ``value`` to the master's own counter. Raises ``ValueError`` on a bad name,
        labels or value, or a name the master already uses for another type."""
        increase = fmt.finite(value)
        if increase is None or increase < 0:
            raise ValueError(f"counter {name!r} cannot go up by {value!r}")
        family = self._own(self._counters, name, "counter", help)
        key = tuple(sorted(labels.items()))
        series = family.series.get(key)
        if series is None:
            series = family.series[key] = _Counter(_master_labels(name, key, frozenset()))
        series.total += increase

    def observe(
        self,
        name: str,
        labels: Mapping[str, str],
        value: float,
        buckets: Sequence[float],
        help: str = "",
    ) -> None:
        """One observation of the master's own histogram; ``buckets`` are the upper bounds,
        fixed per series. Raises ``ValueError`` as ``inc`` does, and on bad or changed
        buckets."""
        observed = fmt.finite(value)
        if observed is None:
            raise ValueError(f"histogram {name!r} cannot observe {value!r}")
        family = self._own(self._histograms, name, "histogram", help)
        key = tuple(sorted(labels.items()))
        series = family.series.get(key)
        if series is None:
            bounds = fmt.bounds_of(list(buckets))
            if isinstance(bounds, str):
                raise ValueError(f"histogram {name!r} {bounds}")
            labels_text = _master_labels(name, key, _MASTER_RESERVED_HISTOGRAM)
            series = family.series[key] = _Histogram(labels_text, bounds)
        elif list(buckets) != series.bounds:
            raise ValueError(f"histogram {name!r} {dict(key)} has buckets {series.bounds}")
        series.counts[bisect_left(series.bounds, observed)] += 1
        series.sum += observed

    def set_gauges(
        self, name: str, help: str, values: Mapping[tuple[tuple[str, str], ...], float]
    ) -> None:
        """Replace every series of the master's own gauge ``name`` (labels as tuples of
        pairs); series not in ``values`` disappear. Raises ``ValueError`` as ``inc`` does."""
        family = self._own(self._gauges, name, "gauge", help)
        old, family.series = family.series, {}
        for pairs, value in values.items():
            current = fmt.finite(value)
            if current is None:
                raise ValueError(f"gauge {name!r} cannot be {value!r}")
            key = tuple(sorted(pairs))
            series = old.get(key) or _Gauge(_master_labels(name, key, frozenset()))
            series.by_worker[_MASTER] = current
            family.series[key] = series

    def _own(self, table: dict[str, _Family[S]], name: str, kind: str, help: str) -> _Family[S]:
        """The master's family ``name``, taken over from the workers the first time."""
        family = table.get(name)
        if family is not None and family.by_master:
            if not family.help:
                family.help = help
            return family
        if not fmt.good_name(name):
            raise ValueError(f"bad metric name {name!r}")
        in_the_way = [
            (other, found)
            for other in (name, *self._clashes(name, kind))
            if (found := self._any_family(other)) is not None
        ]
        for other, found in in_the_way:
            if found.by_master:
                raise ValueError(
                    f"{kind} {name!r} collides with the master's {found.kind} {other!r}"
                )
        for other, _ in in_the_way:
            self._drop(other)
        family = table[name] = _Family(kind, help, by_master=True)
        return family

    def _drop(self, name: str) -> None:
        """Forget the workers' family ``name``; its series stop counting against the cap."""
        if (counters := self._counters.pop(name, None)) is not None:
            self._series -= len(counters.series)
        elif (histograms := self._histograms.pop(name, None)) is not None:
            self._series -= len(histograms.series)
        else:
            for series in self._gauges.pop(name).series.values():
                self._series -= len(series.by_worker)
                series.by_worker.clear()  # so that forget() finds nothing left to uncount

    def _any_family(self, name: str) -> _Family[Any] | None:
        return self._counters.get(name) or self._gauges.get(name) or self._histograms.get(name)

    def _clashes(self, name: str, kind: str) -> list[str]:
        """Families whose lines a family ``name`` of ``kind`` would print too: a histogram
        ``x`` prints ``x_bucket``, ``x_sum`` and ``x_count``."""
        if kind == "histogram":
            return [
                name + suffix
                for suffix in _HISTOGRAM_SUFFIXES
                if name + suffix in self._counters or name + suffix in self._gauges
            ]
        return [
            name.removesuffix(suffix)
            for suffix in _HISTOGRAM_SUFFIXES
            if name.endswith(suffix) and name.removesuffix(suffix) in self._histograms
        ]

    # -- the exposition ------------------------------------------------------------------------

    def render(self) -> str:
        """The whole exposition, in the Prometheus text format 0.0.4: families sorted by name,
        series by labels; a family with no series is left out. Ends with a newline (or is
        empty)."""
        out: list[str] = []
        for name in sorted(self._counters.keys() | self._gauges.keys() | self._histograms.keys()):
            if (counters := self._counters.get(name)) is not None:
                fmt.header(out, name, counters.help, "counter")
                for key in sorted(counters.series):
                    counter = counters.series[key]
                    out.append(fmt.sample_line(name, counter.labels, counter.total))
            elif (gauges := self._gauges.get(name)) is not None:
                if gauges.series:  # only the master's gauges can have none: a worker's go
                    fmt.header(out, name, gauges.help, "gauge")
                for key in sorted(gauges.series):
                    gauge = gauges.series[key]
                    out.append(fmt.sample_line(name, gauge.labels, sum(gauge.by_worker.values())))
            else:
                histograms = self._histograms[name]
                fmt.header(out, name, histograms.help, "histogram")
                for key in sorted(histograms.series):
                    h = histograms.series[key]
                    fmt.histogram_lines(out, name, h.labels, h.bounds, h.counts, h.sum)
        out.append("")
        return "\n".join(out) if len(out) > 1 else ""


def _master_labels(name: str, key: Key, reserved: frozenset[str]) -> str:
    if (reason := fmt.label_refusal(key, reserved)) is not None:
        raise ValueError(f"metric {name!r} {reason}")
    return fmt.label_text(key)

"""The master's metric store: what workers report, added up, rendered for Prometheus.

Pure: no I/O, no clock. Workers are not trusted. Every sample is checked before it touches the
store; a bad one is refused with a one-line reason and the others still apply; the series the
workers create are capped. So a confused or hostile worker can neither make the master raise
nor grow its memory without bound, and whatever strings it sends render safely (spec,
section 1).

Counters and histograms are totals that outlive the worker that reported them (they survive
recycling). Gauges are each worker's current value, rendered as the sum over the live workers,
and vanish with the worker (``forget``). The master's own metrics go through ``inc``,
``set_counter``, ``observe`` and ``set_gauges``; a name the master uses is its own from then
on (a worker's family of that name is dropped, and later samples for it are refused), so a
worker cannot disguise itself as the master's bookkeeping.

This module decides what may be written; what is held, and charged against the caps, is
``MetricTables`` (``_metric_tables.py``).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

from prefork.ops import _metrics_text as fmt
from prefork.ops._metric_series import Counter, Family, Gauge, Histogram, S
from prefork.ops._metric_tables import MAX_BYTES as MAX_BYTES
from prefork.ops._metric_tables import MetricTables
from prefork.ops._metrics_text import Key

_MASTER = -1  # the "worker" that holds the value of one of the master's own gauges
_WORKER_RESERVED = frozenset({"broker"})  # the master adds broker="<type>" itself
_WORKER_RESERVED_HISTOGRAM = frozenset({"broker", "le"})
_MASTER_RESERVED_HISTOGRAM = frozenset({"le"})


class MetricStore(MetricTables):
    """Every metric the master exports: the workers' reports added up, and its own (held in
    the ``MetricTables`` it is)."""

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
            admitted = self._admit(self._counters, name, "counter", key, help, sample, None)
            if isinstance(admitted, str):
                return admitted
            series = self._attach(
                self._counters, name, help, key, Counter(admitted[0]), admitted[1]
            )
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
            admitted = self._admit(self._gauges, name, "gauge", key, help, sample, None)
            if isinstance(admitted, str):
                return admitted
            series = self._attach(self._gauges, name, help, key, Gauge(admitted[0]), admitted[1])
            self._remember(worker_id, name, key)
        elif worker_id not in series.by_worker:
            if (reason := self._full()) is not None:
                return reason
            self._series += 1
            self._remember(worker_id, name, key)
        series.by_worker[worker_id] = value
        return None

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
            table = self._histograms
            admitted = self._admit(table, name, "histogram", key, help, sample, bounds)
            if isinstance(admitted, str):
                return admitted
            new = Histogram(admitted[0], bounds)
            series = self._attach(table, name, help, key, new, admitted[1])
        elif not math.isfinite(series.sum + total):
            return "would overflow its sum"
        elif sum(series.counts) + sum(counts) > fmt.MAX_TOTAL_COUNT:
            return "would overflow its count"
        series.sum += total
        for i, count in enumerate(counts):
            series.counts[i] += count
        return None

    def _head(
        self,
        table: dict[str, Family[S]],
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
        if not family.help and help:  # the first help seen for the name wins, if it fits
            size = fmt.header_size(name, help, kind)
            if self._bytes - family.size + size <= self.max_bytes:
                self._bytes += size - family.size
                family.help, family.size = help, size
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

    def _admit(
        self,
        table: dict[str, Family[S]],
        name: str,
        kind: str,
        key: Key,
        help: str,
        sample: dict[Any, Any],
        bounds: list[float] | None,
    ) -> tuple[str, int] | str:
        """A new series' label text and size (``fmt.series_size``), or why it cannot be
        stored: bad or too long labels, the store full in series or in bytes."""
        labels = sample.get("labels")
        reserved = _WORKER_RESERVED if bounds is None else _WORKER_RESERVED_HISTOGRAM
        reason = None if labels is None else fmt.label_refusal(labels.items(), reserved)
        if reason is not None or (reason := self._full()) is not None:
            return reason
        text = fmt.label_text(key)
        if len(text.encode()) > fmt.MAX_LABEL_TEXT:
            return f"has labels of more than {fmt.MAX_LABEL_TEXT} bytes as printed"
        size = fmt.series_size(name, text, bounds)
        header = 0 if name in table else fmt.header_size(name, help, kind)
        if self._bytes + header + size > self.max_bytes:
            return f"would take a scrape past its limit of {self.max_bytes} bytes"
        return text, size

    # -- the master's own metrics ---------------------------------------------------------------

    def inc(self, name: str, labels: Mapping[str, str], value: float = 1.0, help: str = "") -> None:
        """Add ``value`` to the master's own counter. Raises ``ValueError`` on a bad name,
        labels or value, or a name the master already uses for another type."""
        increase = fmt.finite(value)
        if increase is None or increase < 0:
            raise ValueError(f"counter {name!r} cannot go up by {value!r}")
        self._own_counter(name, labels, help).total += increase

    def set_counter(self, name: str, labels: Mapping[str, str], total: float, help: str) -> None:
        """Set the master's own counter to ``total``, a total kept elsewhere and read off
        (the CPU time the kernel counts). Raises ``ValueError`` as ``inc`` does."""
        value = fmt.finite(total)
        if value is None or value < 0:
            raise ValueError(f"counter {name!r} cannot be {total!r}")
        self._own_counter(name, labels, help).total = value

    def _own_counter(self, name: str, labels: Mapping[str, str], help: str) -> Counter:
        family = self._own(self._counters, name, "counter", help)
        key = tuple(sorted(labels.items()))
        series = family.series.get(key)
        if series is None:
            series = family.series[key] = Counter(_master_labels(name, key, frozenset()))
        return series

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
            series = family.series[key] = Histogram(labels_text, bounds)
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
            series = old.get(key) or Gauge(_master_labels(name, key, frozenset()))
            series.by_worker[_MASTER] = current
            family.series[key] = series

    def _own(self, table: dict[str, Family[S]], name: str, kind: str, help: str) -> Family[S]:
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
        family = table[name] = Family(kind, help, by_master=True)
        return family


def _master_labels(name: str, key: Key, reserved: frozenset[str]) -> str:
    if (reason := fmt.label_refusal(key, reserved)) is not None:
        raise ValueError(f"metric {name!r} {reason}")
    return fmt.label_text(key)

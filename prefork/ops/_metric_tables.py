"""What the metric store (``_metrics.py``) holds: its families by kind, and what they charge
against its caps. Every change that adds or removes a worker's series goes through here
(``_attach``, ``_remember``, ``forget``, ``_drop``), so the charges always match what a scrape
would print; so do the hand-over of an in-place upgrade (``export``, ``adopt``) and the
exposition (``render``, ``pieces``). What may be stored is ``MetricStore``'s to decide.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

from prefork.ops import _metrics_text as fmt
from prefork.ops._metric_series import (
    KINDS,
    Counter,
    Family,
    Gauge,
    Histogram,
    S,
    charges,
    family_doc,
    family_of,
    pieces,
)
from prefork.ops._metrics_text import Key

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
#: The most bytes the workers' series print in one scrape (the master's own come on top:
#: a few KiB per broker).
MAX_BYTES = 16 << 20


class MetricTables:
    """The families of a ``MetricStore``, counted against its caps."""

    def __init__(self, *, max_series: int = 10_000, max_bytes: int = MAX_BYTES) -> None:
        self.max_series = max_series
        # What one scrape may print of the workers' series, every number at its widest:
        # each new series and family is charged its lines' size (fmt.series_size).
        self.max_bytes = max_bytes
        self._bytes = 0
        self._counters: dict[str, Family[Counter]] = {}
        self._gauges: dict[str, Family[Gauge]] = {}
        self._histograms: dict[str, Family[Histogram]] = {}
        # What the cap counts: the workers' counter and histogram series, and each worker's
        # value of each gauge series (that is what takes memory). The master's own series are
        # bounded by its configuration and are not counted, so a flood cannot hide them.
        self._series = 0
        self._gauges_of: dict[int, list[tuple[str, Family[Gauge], Key]]] = {}
        # A gauge is a sum over at most max_series values: each under this, the sum stays
        # finite (half the largest float, so that rounding cannot tip it over).
        self._gauge_limit = sys.float_info.max / (2 * max(1, max_series))

    # -- a worker's series, charged and uncharged --------------------------------------------

    def forget(self, worker_id: int) -> None:
        """The worker left: its gauge values vanish (its counters and histograms stay)."""
        for name, family, key in self._gauges_of.pop(worker_id, ()):
            series = family.series[key]
            if series.by_worker.pop(worker_id, None) is None:
                continue  # the master took the name over, and the value went with it
            self._series -= 1
            if not series.by_worker:
                del family.series[key]
                self._bytes -= series.size
                if not family.series:
                    del self._gauges[name]
                    self._bytes -= family.size

    def _remember(self, worker_id: int, name: str, key: Key) -> None:
        """Note that the worker holds a value of this gauge series, for ``forget``."""
        self._gauges_of.setdefault(worker_id, []).append((name, self._gauges[name], key))

    def _full(self) -> str | None:
        if self._series >= self.max_series:
            return f"would start a new series, and the store holds its limit of {self.max_series}"
        return None

    def _attach(
        self, table: dict[str, Family[S]], name: str, help: str, key: Key, series: S, size: int
    ) -> S:
        """A new worker series (and family, the first time), counted against the caps."""
        family = table.get(name)
        if family is None:
            family = table[name] = Family(series.kind, help, by_master=False)
            family.size = fmt.header_size(name, help, series.kind)
            self._bytes += family.size
        family.series[key] = series
        series.size = size
        self._bytes += size
        self._series += 1
        return series

    def _drop(self, name: str) -> None:
        """Forget the workers' family ``name``; its series stop counting against the caps."""
        family = self._any_family(name)
        assert family is not None
        self._bytes -= family.size + sum(series.size for series in family.series.values())
        if (counters := self._counters.pop(name, None)) is not None:
            self._series -= len(counters.series)
        elif (histograms := self._histograms.pop(name, None)) is not None:
            self._series -= len(histograms.series)
        else:
            for series in self._gauges.pop(name).series.values():
                self._series -= len(series.by_worker)
                series.by_worker.clear()  # so that forget() finds nothing left to uncount

    # -- a family by name ---------------------------------------------------------------------

    def _any_family(self, name: str) -> Family[Any] | None:
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

    # -- an in-place upgrade ---------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """Every family as plain data: the totals the next image of the master ``adopt`` takes."""
        tables: tuple[dict[str, Family[Any]], ...] = (
            self._counters,
            self._gauges,
            self._histograms,
        )
        pairs = zip(KINDS, tables, strict=True)
        return {kind: {n: family_doc(f) for n, f in table.items()} for kind, table in pairs}

    def adopt(self, doc: Mapping[str, Any]) -> None:
        """Hold the families ``export`` gave instead of this store's own, charged against its
        caps as they were (``KeyError``, ``TypeError``, ``ValueError``: ``doc`` is not one)."""
        tables = {kind: {str(n): family_of(f) for n, f in doc[kind].items()} for kind in KINDS}
        self._counters, self._gauges = tables["counters"], tables["gauges"]
        self._histograms = tables["histograms"]
        self._bytes, self._series, self._gauges_of = charges(
            tables["counters"], tables["gauges"], tables["histograms"]
        )

    # -- the exposition ------------------------------------------------------------------------

    def render(self) -> str:
        """The whole exposition at once (``pieces`` joined)."""
        return "".join(self.pieces())

    def pieces(self, size: int = 65536) -> Iterator[str]:
        """The exposition in the Prometheus text format 0.0.4, in pieces of about ``size``
        characters made one at a time (``_metric_series.pieces``)."""
        return pieces(self._counters, self._gauges, self._histograms, size)

"""``--threshold``, as k6 spells them: ``p99<50ms``, ``p(95)<=200``, ``avg<10ms``,
``errors<0.1%``, ``rps>1000``. A run that breaks one exits with ``EXIT_BROKEN`` (k6's 99),
naming each broken threshold. Pure: parsed from words, judged against ``--json``'s document.

Metrics: a latency (``min``, ``med``/``p50``, ``p75``, ``p90``, ``p95``, ``p99``,
``p999``/``p99.9``, ``max``, ``mean``/``avg``; any ``pN``/``p(N)``, 0 <= N <= 100; in ``ms``
when no unit is given, or ``us``/``ms``/``s``), ``errors`` (failed requests over all requests:
a fraction, or a percentage with ``%``), ``rps``, and the counts ``unanswered`` and
``dropped``. Operators: ``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefork.load._histogram import Histogram

#: The exit code of a run that broke a threshold (k6's).
EXIT_BROKEN = 99
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_SPEC = re.compile(
    r"\s*(?P<metric>[a-z]+|p\(?[0-9.]+\)?)\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<value>[0-9]*\.?[0-9]+)\s*(?P<unit>us|ms|s|%)?\s*"
)
_NAMED = {"min": 0.0, "med": 50.0, "max": 100.0}
_MEAN = ("mean", "avg")
_UNITS = {None: 1.0, "ms": 1.0, "us": 0.001, "s": 1000.0}
_COUNTS = ("rps", "unanswered", "dropped")


@dataclass(frozen=True, slots=True)
class Threshold:
    """One threshold: ``metric`` ("p" with ``percentile``, "mean", "errors" or one of
    ``_COUNTS``), its operator and the limit (milliseconds for a latency, a fraction for
    errors); ``spec`` is how it was written."""

    spec: str
    metric: str
    op: str
    limit: float
    percentile: float = 0.0

    def value(self, doc: dict[str, Any], latency: Histogram) -> float:
        """The measured value this threshold is about."""
        if self.metric == "p":
            return latency.percentile(self.percentile) / 1000
        if self.metric == "mean":
            return latency.mean() / 1000
        if self.metric == "errors":
            failed = sum(doc["errors"].values())
            without_answer = failed - doc["errors"]["status"]
            attempts = doc["requests"] + without_answer
            return failed / attempts if attempts else 0.0
        return float(doc[self.metric])

    def broken(self, doc: dict[str, Any], latency: Histogram) -> str | None:
        """None when kept; else the threshold and what was measured, in one phrase."""
        value = self.value(doc, latency)
        if _OPS[self.op](value, self.limit):
            return None
        shown = {"p": f"{value:g}ms", "mean": f"{value:g}ms", "errors": f"{value * 100:.3g}%"}
        return f"{self.spec} (measured {shown.get(self.metric, f'{value:g}')})"


def parse(spec: str) -> Threshold:
    """A threshold as k6 writes it. Raises ValueError with what is wrong, in one line."""
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(
            f"threshold {spec!r} must look like p99<50ms, avg<10ms, errors<0.1% or rps>1000"
        )
    metric, op, unit = match["metric"], match["op"], match["unit"]
    value = float(match["value"])
    shown = spec.strip()
    if metric == "errors":
        if unit not in (None, "%"):
            raise ValueError(f"threshold {spec!r}: errors are a fraction (0.001) or a % (0.1%)")
        return Threshold(shown, "errors", op, value / 100 if unit == "%" else value)
    if metric in _COUNTS:
        if unit is not None:
            raise ValueError(f"threshold {spec!r}: {metric} is a number, without a unit")
        return Threshold(shown, metric, op, value)
    if unit == "%":
        raise ValueError(f"threshold {spec!r}: a latency is in us, ms (the default) or s")
    limit = value * _UNITS[unit]
    if metric in _MEAN:
        return Threshold(shown, "mean", op, limit)
    if metric in _NAMED:
        return Threshold(shown, "p", op, limit, _NAMED[metric])
    digits = metric[1:].strip("()")
    if metric.startswith("p") and re.fullmatch(r"[0-9]*\.?[0-9]+", digits):
        p = float(digits) if metric.startswith("p(") or "." in digits else _pN(digits)
        if 0 <= p <= 100 and math.isfinite(p):
            return Threshold(shown, "p", op, limit, p)
    raise ValueError(
        f"threshold {spec!r}: unknown metric {metric!r} (min, med, p90, p95, p99, p999, "
        "p(N), max, avg, errors, rps, unanswered, dropped)"
    )


def _pN(digits: str) -> float:
    """k6's and wrk's shorthand: p99 is 99, p999 is 99.9, p9999 is 99.99."""
    if len(digits) > 2 and set(digits) == {"9"}:
        return float("99." + digits[2:])
    return float(digits)


def broken(thresholds: list[Threshold], doc: dict[str, Any]) -> list[str]:
    """Each broken threshold of ``doc`` (a ``--json`` document), as ``Threshold.broken``
    says it; empty when all hold."""
    if not thresholds:
        return []
    latency = Histogram.from_hdr(
        doc["latency_hdr"],
        doc["latency_us"]["sum"],
        doc["latency_us"]["min"],
        doc["latency_us"]["max"],
    )
    return [b for t in thresholds if (b := t.broken(doc, latency)) is not None]

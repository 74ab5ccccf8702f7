"""A latency histogram that merges exactly: what every load worker fills and the master adds up.

Log-linear buckets, as HdrHistogram's: values 0..255 have a bucket each; above, every power of
two [2**b, 2**(b+1)) is cut into 128 equal buckets, found from the value's bit length and its
top 8 bits. A bucket is at most 1/128 of its lowest value wide, so its midpoint is within 0.4%
of any value in it. Merging adds counts, so the master's percentiles are those of every request
from every worker, not an average of per-worker percentiles (which would be meaningless).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from fractions import Fraction
from itertools import accumulate
from typing import Any

from prefork.load import _hdr

_BITS = 7  # 2**7 = 128 buckets per power of two: each at most 1/128 of its lowest value wide
_EXACT = 2 << _BITS  # values below 256 have a bucket of their own


def bucket_of(value: int) -> int:
    """The index of the bucket that holds ``value`` (an int >= 0); ``record`` inlines it."""
    if value < _EXACT:
        return value
    # Keep the top 8 bits (128..255) and add 128 buckets per bit dropped: indexes run on
    # without a gap from 256, which is where exact buckets end.
    shift = value.bit_length() - _BITS - 1
    return (shift << _BITS) + (value >> shift)


def bounds_of(index: int) -> tuple[int, int]:
    """The lowest and highest value that bucket ``index`` holds."""
    if index < _EXACT:
        return index, index
    shift = (index >> _BITS) - 1
    low = (index - (shift << _BITS)) << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Counts of integer latencies (microseconds) in log-linear buckets, with the exact count,
    sum, minimum and maximum beside them."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}  # bucket index -> count; sparse, no upper limit
        self._n = 0
        self._sum = 0
        self._min: float = math.inf  # an int once something is recorded
        self._max = 0

    def record(self, micros: int, count: int = 1) -> None:
        """Record ``count`` occurrences of ``micros`` (a negative value counts as 0).

        Raises ValueError when ``count`` is negative; a count of 0 records nothing.
        """
        # The hot path (once per request): a few integer operations and one dict update.
        if micros < 0:
            micros = 0
        if count < 1:
            if count < 0:
                raise ValueError(f"a histogram count cannot be negative, got {count}")
            return
        if micros < _EXACT:
            index = micros
        else:  # bucket_of, inlined
            shift = micros.bit_length() - _BITS - 1
            index = (shift << _BITS) + (micros >> shift)
        counts = self._counts
        counts[index] = counts.get(index, 0) + count
        self._n += count
        self._sum += micros * count
        if micros > self._max:
            self._max = micros
        if micros < self._min:
            self._min = micros

    def merge(self, other: Histogram) -> None:
        """Add every value ``other`` recorded to this histogram (exactly: counts add)."""
        counts = self._counts
        for index, count in other._counts.items():
            counts[index] = counts.get(index, 0) + count
        self._n += other._n
        self._sum += other._sum
        self._max = max(self._max, other._max)
        self._min = min(self._min, other._min)

    @property
    def count(self) -> int:
        """How many values were recorded."""
        return self._n

    @property
    def total(self) -> int:
        """The exact sum of the recorded values."""
        return self._sum

    @property
    def min(self) -> int:
        """The smallest recorded value, exactly (0 when empty)."""
        return int(self._min) if self._n else 0

    @property
    def max(self) -> int:
        """The largest recorded value, exactly (0 when empty)."""
        return self._max

    def mean(self) -> float:
        """The exact mean of the recorded values (0.0 when empty)."""
        return self._sum / self._n if self._n else 0.0

    def percentile(self, p: float) -> float:
        """The value at percentile ``p`` (0 to 100), within 0.4% of the exact one; 0.0 when empty.

        As HdrHistogram: the first bucket whose cumulative count reaches rank ceil(p/100 *
        count) (at least 1) holds the value, reported as the bucket's midpoint, clamped to the
        exact [min, max] (so p100 is the maximum). Raises ValueError when p is outside [0, 100].
        """
        if not 0 <= p <= 100:
            raise ValueError(f"a percentile is between 0 and 100, got {p}")
        if not self._n:
            return 0.0
        # p as written in decimal (99.9 is 999/10, not the float just above it): an exact rank.
        rank = max(1, math.ceil(Fraction(repr(float(p))) * self._n / 100))
        indexes = sorted(self._counts)
        cumulative = list(accumulate(self._counts[i] for i in indexes))
        low, high = bounds_of(indexes[bisect_left(cumulative, rank)])
        return float(min(max((low + high) / 2, self.min), self._max))

    def stdev(self) -> float:
        """The standard deviation, from the exact mean and each bucket's midpoint (as
        HdrHistogram computes it); 0.0 when empty."""
        if not self._n:
            return 0.0
        mean = self.mean()
        square = 0.0
        for index, count in self._counts.items():
            low, high = bounds_of(index)
            square += ((low + high) / 2 - mean) ** 2 * count
        return math.sqrt(square / self._n)

    def corrected(self, expected: int) -> Histogram:
        """A copy corrected for coordinated omission as wrk 4 corrects its closed loop
        (``stats_correct``): for each value v of at least 2 * ``expected`` microseconds, the
        values v - expected, v - 2 * expected, ... down to above ``expected`` are added, once
        per count of v: the requests a stalled connection would have sent had it not waited.
        v is taken at its bucket's midpoint (clamped to [min, max]). The values added are
        counted bucket by bucket (an arithmetic run falls into each bucket a countable number
        of times), so the cost is buckets squared, whatever the values. ``expected`` below 1
        corrects nothing."""
        out = Histogram()
        out.merge(self)
        if expected < 1:
            return out
        counts = out._counts
        for index, count in sorted(self._counts.items()):
            low, high = bounds_of(index)
            v = min(max((low + high) // 2, self.min), self._max)
            if v < 2 * expected:
                continue
            # The values added are v - j * expected for j = 1 .. last, each above expected.
            last = (v - expected - 1) // expected
            first_bucket, last_bucket = bucket_of(v - last * expected), bucket_of(v - expected)
            for target in range(first_bucket, last_bucket + 1):
                lo, hi = bounds_of(target)
                j_low = max(1, -(-(v - hi) // expected))  # ceil((v - hi) / expected)
                j_high = min(last, (v - lo) // expected)
                if j_high < j_low:
                    continue
                n = j_high - j_low + 1
                counts[target] = counts.get(target, 0) + n * count
                out._n += n * count
                out._sum += count * (n * v - expected * (j_low + j_high) * n // 2)
            out._min = min(out._min, v - last * expected)
        return out

    @classmethod
    def from_hdr(cls, text: str, total: int, low: int, high: int) -> Histogram:
        """The histogram of an HdrHistogram encoding (``encode``'s) with its exact sum,
        minimum and maximum beside it (``--json``'s ``latency_hdr`` and ``latency_us``).
        Raises ValueError when the encoding is malformed or they do not fit together."""
        counts = _hdr.decode(text)
        n = sum(counts.values())
        return cls.from_json(
            {
                "b": [[i, c] for i, c in sorted(counts.items())],
                "n": n,
                "sum": total,
                "min": low,
                "max": high,
            }
        )

    def encode(self) -> str:
        """HdrHistogram's base64 compressed V2 encoding of the buckets (``_hdr``)."""
        return _hdr.encode(self._counts, self._max)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict of everything recorded; ``Histogram.from_json`` reads it back."""
        buckets = [[i, self._counts[i]] for i in sorted(self._counts)]
        return {"b": buckets, "n": self._n, "sum": self._sum, "min": self.min, "max": self._max}

    @classmethod
    def from_json(cls, d: Any) -> Histogram:
        """The histogram ``to_json`` described. Raises ValueError when ``d`` is malformed or
        inconsistent (it comes from another process)."""
        if not isinstance(d, dict) or set(d) != {"b", "n", "sum", "min", "max"}:
            raise ValueError(f"not a histogram: {d!r:.200}")
        buckets, n, total, low, high = d["b"], d["n"], d["sum"], d["min"], d["max"]
        if not all(type(v) is int and v >= 0 for v in (n, total, low, high)):
            raise ValueError(f"a histogram's n, sum, min and max are ints >= 0: {d!r:.200}")
        if not isinstance(buckets, list) or not all(_is_bucket(b) for b in buckets):
            raise ValueError(f"a histogram's buckets are [index, count > 0] pairs: {d!r:.200}")
        h = cls()
        h._counts = counts = dict(buckets)
        first, last = min(counts, default=-1), max(counts, default=-1)
        if n:  # every index between min's bucket and max's: none absurdly large
            fits = first == bucket_of(low) and last == bucket_of(high)
            fits = fits and low * n <= total <= high * n
        else:
            fits = total == low == high == 0
        if len(counts) != len(buckets) or sum(counts.values()) != n or not fits:
            raise ValueError(f"an inconsistent histogram: {d!r:.200}")
        h._n, h._sum, h._max = n, total, high
        h._min = low if n else math.inf
        return h


def _is_bucket(b: Any) -> bool:
    return (
        isinstance(b, list)
        and len(b) == 2
        and all(type(v) is int for v in b)
        and b[0] >= 0
        and b[1] > 0
    )

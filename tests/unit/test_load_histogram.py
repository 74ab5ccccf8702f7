"""The latency histogram: under 1% from the exact percentile, merged and sent exactly."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork.load._histogram import Histogram, bounds_of, bucket_of

MARKS = (0, 0.1, 1, 25, 50, 75, 90, 99, 99.9, 99.99, 100)


def of(values: list[int]) -> Histogram:
    h = Histogram()
    for v in values:
        h.record(v)
    return h


def exact(values: list[int], p: float) -> int:
    """The nearest-rank percentile of ``values`` (what HdrHistogram's rank means)."""
    ordered = sorted(max(v, 0) for v in values)
    rank = max(1, math.ceil(Fraction(repr(float(p))) * len(ordered) / 100))
    return ordered[rank - 1]


def assert_close(h: Histogram, values: list[int], p: float) -> None:
    got, want = h.percentile(p), exact(values, p)
    assert abs(got - want) <= want / 256, (p, got, want)  # the bound; 1% is what we promise


def test_buckets_tile_the_integers_without_gaps_and_are_at_most_1_128th_wide() -> None:
    assert [bucket_of(v) for v in range(256)] == list(range(256))  # 0..255 exact
    high = 0
    for index in range(256 * 40):
        low, high_next = bounds_of(index)
        assert low == (high + 1 if index else 0)
        assert bucket_of(low) == bucket_of(high_next) == index
        assert high_next - low + 1 <= max(1, low / 128)
        high = high_next


@pytest.mark.parametrize("v", [0, 1, 127, 128, 255, 256, 257, 511, 512, 10**6, 2**64 + 3])
def test_a_value_lies_in_its_bucket(v: int) -> None:
    low, high = bounds_of(bucket_of(v))
    assert low <= v <= high


latencies = st.lists(
    st.one_of(
        st.integers(min_value=-5, max_value=300),
        st.integers(min_value=0, max_value=10**7),
        st.integers(min_value=0, max_value=2**70),
    ),
    min_size=1,
    max_size=300,
)


@given(latencies, st.floats(min_value=0, max_value=100))
def test_every_percentile_is_within_1_percent_of_the_exact_one(values: list[int], p: float) -> None:
    h = of(values)
    assert_close(h, values, p)
    for mark in MARKS:
        assert_close(h, values, mark)


@pytest.mark.parametrize(
    "values",
    [
        [bounds_of(i)[0] for i in range(200, 3000, 7)],  # every value at its bucket's low edge
        [bounds_of(i)[1] for i in range(200, 3000, 7)],  # ... and at its high edge
        [2**k + d for k in range(8, 60) for d in (-1, 0, 1)],  # around powers of two
        [1] * 999 + [10**9],  # one huge outlier: p99.9 is 1, p100 the outlier
        [10**9] * 999 + [1],
        [0] * 10 + [257] * 10,  # bimodal, on the first bucket 2 wide
        [12345] * 1000,  # all equal: every percentile is the value, exactly
    ],
)
def test_adversarial_data(values: list[int]) -> None:
    h = of(values)
    for p in MARKS:
        assert_close(h, values, p)
        assert min(values) <= h.percentile(p) <= max(values)


def test_a_single_value_is_every_percentile_exactly() -> None:
    h = of([1000])  # bucket 1000..1003: the midpoint is clamped to the value itself
    assert [h.percentile(p) for p in MARKS] == [1000.0] * len(MARKS)
    assert (h.count, h.total, h.min, h.max, h.mean()) == (1, 1000, 1000, 1000, 1000.0)


def test_p100_is_the_max_and_p0_the_first_rank_at_least_the_min() -> None:
    values = [299, 301, 99_999, 100_001]  # 99_999 and 100_001 share a 512-wide bucket
    h = of(values)
    assert h.percentile(100) == 100_001.0
    assert h.percentile(0) == h.percentile(1e-9) == 299.0  # 298..299's midpoint, clamped
    assert h.percentile(50) == 300.5  # 300..301's midpoint
    assert h.percentile(75) != 99_999  # a midpoint, not an exact value ...
    assert_close(h, values, 75)  # ... but a close one


def test_the_rank_is_read_in_decimal() -> None:
    h = of(list(range(1, 1001)))  # p99.9 of 1..1000 is rank 999, not 1000
    assert exact(list(range(1, 1001)), 99.9) == 999
    assert bounds_of(bucket_of(999)) == (996, 999)  # and 1000 is in the next bucket
    assert h.percentile(99.9) == 997.5


@pytest.mark.parametrize("p", [-0.1, 100.1, math.nan, math.inf])
def test_a_percentile_outside_0_100_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        of([1]).percentile(p)


def test_an_empty_histogram() -> None:
    h = Histogram()
    assert (h.count, h.total, h.min, h.max, h.mean(), h.percentile(50)) == (0, 0, 0, 0, 0.0, 0.0)
    assert h.to_json() == {"b": [], "n": 0, "sum": 0, "min": 0, "max": 0}
    assert Histogram.from_json(h.to_json()).to_json() == h.to_json()


def test_count_sum_min_max_mean_are_exact_and_negatives_count_as_zero() -> None:
    h = of([5, -3, 10**12 + 1, 700])
    assert (h.count, h.total, h.min, h.max) == (4, 10**12 + 706, 0, 10**12 + 1)
    assert h.mean() == (10**12 + 706) / 4


def test_record_with_a_count() -> None:
    h = Histogram()
    h.record(777, 5)
    h.record(3, 0)  # nothing
    assert h.to_json() == of([777] * 5).to_json()
    with pytest.raises(ValueError, match="cannot be negative"):
        h.record(3, -1)
    assert h.to_json() == of([777] * 5).to_json()


@given(latencies, latencies)
def test_the_merge_of_two_halves_is_the_histogram_of_the_whole(a: list[int], b: list[int]) -> None:
    merged = of(a)
    merged.merge(of(b))
    assert merged.to_json() == of(a + b).to_json()


def test_merging_with_an_empty_histogram_changes_nothing() -> None:
    h = of([3, 3000])
    h.merge(Histogram())
    assert h.to_json() == of([3, 3000]).to_json()
    empty = Histogram()
    empty.merge(h)
    assert empty.to_json() == h.to_json()
    assert (empty.min, empty.max) == (3, 3000)


@given(latencies)
def test_a_json_round_trip_is_exact(values: list[int]) -> None:
    h = of(values)
    back = Histogram.from_json(json.loads(json.dumps(h.to_json())))
    assert back.to_json() == h.to_json()
    assert (back.count, back.total, back.min, back.max) == (h.count, h.total, h.min, h.max)
    assert [back.percentile(p) for p in MARKS] == [h.percentile(p) for p in MARKS]


def test_the_json_is_compact() -> None:
    assert of([1, 1, 300]).to_json() == {
        "b": [[1, 2], [278, 1]],
        "n": 3,
        "sum": 302,
        "min": 1,
        "max": 300,
    }


GOOD: dict[str, Any] = {"b": [[1, 2], [278, 1]], "n": 3, "sum": 302, "min": 1, "max": 300}


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {k: v for k, v in GOOD.items() if k != "sum"},
        {**GOOD, "extra": 1},
        {**GOOD, "n": True},
        {**GOOD, "n": 3.0},
        {**GOOD, "min": -1},
        {**GOOD, "b": {"1": 2}},
        {**GOOD, "b": [[1, 2, 3], [278, 1]]},
        {**GOOD, "b": [(1, 2), [278, 1]]},
        {**GOOD, "b": [[1, 0], [1, 2], [278, 1]]},  # a zero count
        {**GOOD, "b": [[-1, 2], [278, 1]]},
        {**GOOD, "b": [[1, 1], [1, 1], [278, 1]]},  # an index twice
        {**GOOD, "n": 4},  # the counts do not add up to n
        {**GOOD, "min": 2},  # the lowest bucket is not min's
        {**GOOD, "max": 10**100},  # the highest bucket is not max's
        {**GOOD, "b": [[1, 2], [10**9, 1]], "max": 300},  # an absurd index
        {**GOOD, "sum": 10**6},  # more than n * max
        {**GOOD, "sum": 2},  # less than n * min
        {"b": [], "n": 0, "sum": 0, "min": 0, "max": 5},  # an empty histogram with a max
        {"b": [[1, 1]], "n": 0, "sum": 0, "min": 0, "max": 0},
        {"b": [], "n": 1, "sum": 1, "min": 1, "max": 1},  # a count without a bucket
    ],
)
def test_a_malformed_histogram_is_refused(bad: Any) -> None:
    Histogram.from_json(GOOD)  # the base is fine
    with pytest.raises(ValueError, match="histogram"):
        Histogram.from_json(bad)

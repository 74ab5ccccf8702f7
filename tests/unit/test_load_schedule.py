"""The open-loop schedule: intended send times, sends due, and a rate split over workers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefork.load._schedule import RateSchedule, offset, share

rates = st.floats(min_value=0.01, max_value=1e7)
starts = st.floats(min_value=0, max_value=1e6)


def below(t: float) -> float:
    return math.nextafter(t, -math.inf)


def test_send_k_is_intended_at_start_plus_k_over_rate() -> None:
    s = RateSchedule(4.0, 100.0)
    assert [s.intended(k) for k in range(5)] == [100.0, 100.25, 100.5, 100.75, 101.0]
    assert (s.rate, s.start) == (4.0, 100.0)


def test_due_counts_the_sends_intended_by_now() -> None:
    s = RateSchedule(4.0, 100.0)
    expected = {0.0: 0, 99.99: 0, 100.0: 1, 100.1: 1, 100.25: 2, 100.99: 4, 101.0: 5, 110.0: 41}
    assert {t: s.due(t) for t in expected} == expected


@pytest.mark.parametrize(
    ("rate", "start", "k", "now"),
    [
        (3.0, 0.0, 5, below(5 / 3)),  # (now - start) * rate rounds up to 5.0: one too many
        (3.0, 0.1, 12, 4.1),  # (4.1 - 0.1) * 3 is 11.999...: one too few
    ],
)
def test_due_agrees_with_intended_where_the_product_rounds_wrong(
    rate: float, start: float, k: int, now: float
) -> None:
    s = RateSchedule(rate, start)
    assert s.due(now) == (k + 1 if s.intended(k) <= now else k)
    assert s.intended(s.due(now) - 1) <= now < s.intended(s.due(now))


@given(rates, starts, st.integers(min_value=0, max_value=10**6))
def test_send_k_is_due_exactly_from_its_intended_time(rate: float, start: float, k: int) -> None:
    s = RateSchedule(rate, start)
    t = s.intended(k)
    assert s.due(t) == k + 1
    assert s.due(below(t)) <= k  # k itself is not due a moment before (several may share t)


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf, math.nan])
def test_a_rate_must_be_finite_and_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        RateSchedule(rate, 0.0)
    with pytest.raises(ValueError, match="rate"):
        share(rate, 2, 0)
    with pytest.raises(ValueError, match="rate"):
        offset(2, 0, rate)


@pytest.mark.parametrize("start", [math.inf, math.nan])
def test_a_start_must_be_finite(start: float) -> None:
    with pytest.raises(ValueError, match="start"):
        RateSchedule(1.0, start)


@pytest.mark.parametrize(("workers", "index"), [(2, -1), (2, 2), (0, 0)])
def test_a_worker_index_must_be_one_of_the_workers(workers: int, index: int) -> None:
    with pytest.raises(ValueError, match="worker index"):
        share(10.0, workers, index)
    with pytest.raises(ValueError, match="worker index"):
        offset(workers, index, 10.0)


@given(rates, st.integers(min_value=1, max_value=512))
def test_the_shares_add_up_to_the_rate_exactly(rate: float, workers: int) -> None:
    parts = [share(rate, workers, i) for i in range(workers)]
    assert sum(parts) == rate
    assert math.fsum(parts) == rate
    assert all(math.isclose(p, rate / workers, rel_tol=1e-12) for p in parts)


def test_offsets_stagger_the_workers_by_one_send() -> None:
    assert [offset(4, i, 100.0) for i in range(4)] == [0.0, 0.01, 0.02, 0.03]


def schedules(rate: float, workers: int, start: float) -> list[RateSchedule]:
    """The workers' schedules as a load run builds them."""
    return [
        RateSchedule(share(rate, workers, i), start + offset(workers, i, rate))
        for i in range(workers)
    ]


@given(
    st.integers(min_value=1, max_value=100_000),
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=1, max_value=120),
    starts,
)
def test_over_s_seconds_the_workers_send_rate_times_s(
    rate: int, workers: int, seconds: int, start: float
) -> None:
    ws = schedules(float(rate), workers, start)
    # Sends intended in [start, start + S): R x S; one more is due at start + S itself.
    assert sum(s.due(start + seconds - 0.5 / rate) for s in ws) == rate * seconds
    assert abs(sum(s.due(start + seconds) for s in ws) - rate * seconds) <= 1


@given(rates, st.integers(min_value=1, max_value=16), st.floats(min_value=0, max_value=1000))
def test_the_workers_sends_interleave_as_one_schedule(
    rate: float, workers: int, start: float
) -> None:
    ws = schedules(rate, workers, start)
    merged = sorted(s.intended(k) for s in ws for k in range(10))
    one = RateSchedule(rate, start)
    for j, t in enumerate(merged):
        assert abs(t - one.intended(j)) <= 1e-3 / rate  # a thousandth of a period

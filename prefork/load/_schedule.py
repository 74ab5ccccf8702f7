"""The open-loop schedule of ``--rate``: when each request is meant to be sent, as wrk2 does.

A closed loop (send, wait for the answer, send again) slows down with the server, so a stalled
server is asked less and its stall hides in a few slow samples (coordinated omission). An open
loop fixes the send times in advance; a worker sends what is due and measures each request's
latency from its intended time, so a request that could not even be sent on time is counted as
late as it was. Pure: time is passed in (any clock, in seconds), nothing here reads one.
"""

from __future__ import annotations

import math


def _check_rate(rate: float) -> None:
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"a rate is a finite number of requests per second > 0, got {rate}")


class RateSchedule:
    """A constant arrival rate: send number k (k = 0, 1, ...) is intended at start + k / rate.

    Raises ValueError unless ``rate`` is finite and > 0 and ``start`` is finite.
    """

    def __init__(self, rate: float, start: float) -> None:
        _check_rate(rate)
        if not math.isfinite(start):
            raise ValueError(f"a schedule's start is a finite time, got {start}")
        self.rate = rate
        self.start = start

    def intended(self, k: int) -> float:
        """When send number ``k`` (from 0) is meant to leave."""
        return self.start + k / self.rate

    def due(self, now: float) -> int:
        """How many sends are due by ``now``: the number of k with intended(k) <= now.

        0 before ``start``; 1 at ``start``; floor((now - start) * rate) + 1 after it, up to
        rounding, which is settled against ``intended`` itself, so a worker that sends k when
        ``due(now) > k`` never sends before ``intended(k)`` and never falls one behind.
        """
        if now < self.start:
            return 0
        n = math.floor((now - self.start) * self.rate) + 1
        # The product above and intended() round differently; a step either way fixes it
        # (intended(0) is start <= now, so the first loop stops at 1).
        while self.intended(n - 1) > now:
            n -= 1
        while self.intended(n) <= now:
            n += 1
        return n


def share(rate: float, workers: int, index: int) -> float:
    """Worker ``index``'s part of ``rate`` over ``workers`` workers (about rate / workers).

    The parts are the steps between the points rate * i / workers, each an exact float
    difference, so added up in order (or with ``math.fsum``) they give ``rate`` exactly: no
    request is lost to rounding across workers. Raises ValueError on a bad rate or index.
    """
    _check_rate(rate)
    _check_slot(workers, index)

    def point(i: int) -> float:
        return rate if i == workers else rate * i / workers

    # Exact by Sterbenz's lemma: point(i + 1) is at most twice point(i) for i >= 1.
    return point(index + 1) - point(index)


def offset(workers: int, index: int, rate: float) -> float:
    """How long after the common start worker ``index`` sends its first request: index / rate.

    With ``share``, worker i takes sends i, i + W, i + 2W, ... of one schedule at ``rate``, so
    W workers' sends interleave evenly instead of leaving together. Raises ValueError on a bad
    rate or index.
    """
    _check_rate(rate)
    _check_slot(workers, index)
    return index / rate


def _check_slot(workers: int, index: int) -> None:
    if not 0 <= index < workers:
        raise ValueError(f"worker index {index} is not in 0..{workers - 1}")

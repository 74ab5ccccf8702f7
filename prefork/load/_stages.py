"""Load shapes of ``--stages '10s:100,30s:1000,10s:0'``: a level (an arrival rate for the open
loop, as k6's ramping-arrival-rate; a number of connections for the closed loop, as k6's
ramping-vus) going linearly from where it is to each stage's target over the stage's
duration. The run lasts the stages' sum.

The open loop's schedule stays exact: send k is intended when the integral of the rate
reaches k (with a constant rate, start + k / rate, as ``RateSchedule``); worker i of W takes
sends i, i + W, i + 2W, ... of that one schedule, so the workers' sends interleave and add up
to it exactly. Pure: time is passed in (seconds of any clock), nothing here reads one.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

#: The most stages of a run (a shape is a few; more is a generated file gone wrong).
MAX_STAGES = 100


class Stages:
    """A piecewise linear level from ``level0`` through ``stages`` ((duration, target), ...).

    Raises ValueError on no stages, more than ``MAX_STAGES``, a duration not > 0 or a level
    not >= 0 (each finite)."""

    def __init__(self, level0: float, stages: tuple[tuple[float, float], ...]) -> None:
        if not 1 <= len(stages) <= MAX_STAGES:
            raise ValueError(f"a load shape has 1 to {MAX_STAGES} stages, got {len(stages)}")
        for duration, target in stages:
            if not (math.isfinite(duration) and duration > 0):
                raise ValueError(f"a stage lasts a time > 0, got {duration}")
            if not (math.isfinite(target) and target >= 0):
                raise ValueError(f"a stage's target is a number >= 0, got {target}")
        if not (math.isfinite(level0) and level0 >= 0):
            raise ValueError(f"a load shape starts at a number >= 0, got {level0}")
        self.stages = stages
        self.ends = [0.0]  # when each stage ends (from the start), the first one's start first
        self.levels = [float(level0)]  # the level at each of those times
        self.areas = [0.0]  # the integral of the level up to each of those times
        for duration, target in stages:
            low = self.levels[-1]
            self.areas.append(self.areas[-1] + (low + target) * duration / 2)
            self.ends.append(self.ends[-1] + duration)
            self.levels.append(float(target))

    @property
    def length(self) -> float:
        """The stages' sum: how long the run lasts."""
        return self.ends[-1]

    @property
    def total(self) -> float:
        """The integral of the level over the whole run (the open loop's sends, uncounted)."""
        return self.areas[-1]

    def level(self, t: float) -> float:
        """The level ``t`` seconds after the start (the first level before it, the last after
        the end)."""
        if t <= 0:
            return self.levels[0]
        j = bisect_right(self.ends, t) - 1
        if j >= len(self.stages):
            return self.levels[-1]
        low, high = self.levels[j], self.levels[j + 1]
        return low + (high - low) * (t - self.ends[j]) / self.stages[j][0]

    def time_of(self, area: float) -> float:
        """When (seconds from the start) the integral of the level first reaches ``area``
        (>= 0); ``inf`` when it never does within the stages."""
        i = bisect_left(self.areas, area)
        if i == len(self.areas):
            return math.inf
        if self.areas[i] == area:  # the earliest time it does: a stage's start
            return self.ends[i]
        j = i - 1
        a = area - self.areas[j]
        low, high, duration = self.levels[j], self.levels[j + 1], self.stages[j][0]
        # low * s + (high - low) * s**2 / (2 * duration) = a, solved in the form that neither
        # divides by 0 (a constant level) nor loses digits (a level near 0).
        s = 2 * a / (low + math.sqrt(low * low + 2 * (high - low) * a / duration))
        return self.ends[j] + min(s, duration)


class StagedSchedule:
    """The open loop's schedule of ``--rate R --stages ...``: the rate goes from R through
    the stages; this worker's sends are numbers ``first``, ``first + stride``, ... of the
    run's (``Schedule``: ``start``, ``intended(k)``, ``due(now)``). Raises ValueError on a bad
    shape or worker."""

    def __init__(self, stages: Stages, start: float, stride: int = 1, first: int = 0) -> None:
        if not 0 <= first < stride:
            raise ValueError(f"worker index {first} is not in 0..{stride - 1}")
        if not math.isfinite(start):
            raise ValueError(f"a schedule's start is a finite time, got {start}")
        self.stages = stages
        self.start = start
        self.stride = stride
        self.first = first
        #: The run's sends: those intended before its end.
        self.count = math.ceil(stages.total)

    def _intended_all(self, k: int) -> float:
        """When the run's send k is meant to leave (``inf`` past the last)."""
        if k >= self.count:
            return math.inf
        return self.start + self.stages.time_of(k)

    def _due_all(self, now: float) -> int:
        """How many of the run's sends are intended by ``now``, settled against
        ``_intended_all`` as ``RateSchedule.due`` is."""
        if now < self.start:
            return 0
        stages = self.stages
        t = now - self.start
        # The integral of the level up to t, from the stage t is in.
        j = min(bisect_right(stages.ends, t) - 1, len(stages.stages) - 1)
        s = min(t - stages.ends[j], stages.stages[j][0])
        low, high = stages.levels[j], stages.levels[j + 1]
        area = stages.areas[j] + low * s + (high - low) * s * s / (2 * stages.stages[j][0])
        n = min(self.count, math.floor(area) + 1)
        while n > 0 and self._intended_all(n - 1) > now:
            n -= 1
        while self._intended_all(n) <= now:
            n += 1
        return n

    def intended(self, k: int) -> float:
        """When this worker's send ``k`` (from 0) is meant to leave; ``inf`` past its last."""
        return self._intended_all(self.first + k * self.stride)

    def due(self, now: float) -> int:
        """How many of this worker's sends are due by ``now``."""
        return max(0, (self._due_all(now) - self.first + self.stride - 1) // self.stride)


def split_level(level: float, parts: int, index: int) -> int:
    """Worker ``index``'s part of ``floor(level)`` connections over ``parts`` workers (the
    parts add up to it exactly)."""
    total = math.floor(level)
    return total // parts + (1 if index < total % parts else 0)

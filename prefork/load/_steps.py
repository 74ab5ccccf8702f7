"""Per-step statistics of a scenario (locust's ``name=``, k6's tags): each request a scenario's
``Client`` makes belongs to a step, named by the scenario (``client.get("/u/7", name="user")``)
or, unnamed, by its method and path without the query (``GET /u/7``, as locust and k6 group by
URL); a ``timed()`` block is ``timed`` unless named.

Bounded whatever the scenario does: ``MAX_STEPS`` names are kept (the first ones seen), every
later one is counted under ``OTHER``; a name is cut to ``MAX_STEP_NAME`` characters. So a
scenario that names a million distinct steps (an id in each path) holds ``MAX_STEPS`` + 1
entries, in a worker and in the master alike.

Per step: ``requests`` (every request of the step the run counted: answered, failed or
unanswered at the end), ``errors`` (failed: no response, or a status >= 400) and the latency
histogram (the answered and the unanswered, as the run's own). Pure: no clock, no I/O.
"""

from __future__ import annotations

from typing import Any

from prefork.load._histogram import Histogram

#: Step names kept; the rest are counted under ``OTHER``.
MAX_STEPS = 100
#: The longest step name kept (a path can be long): the rest is cut.
MAX_STEP_NAME = 100
#: Where the steps beyond ``MAX_STEPS`` are counted.
OTHER = "(other)"


def step_name(method: str, path: str, name: str | None) -> str:
    """A request's step: ``name``, or its method and path without the query. Raises
    ``TypeError`` when ``name`` is neither a string nor None (before anything is sent)."""
    if name is None:
        return f"{method} {path.partition('?')[0]}"
    if not isinstance(name, str):
        raise TypeError(f"a step's name is a string, got {name!r:.60}")
    return name


class Step:
    """One step's counts and latency histogram (microseconds)."""

    __slots__ = ("errors", "latency", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency = Histogram()

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "latency": self.latency.to_json()}

    def add(self, other: Step) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency.merge(other.latency)


class Steps:
    """Steps by name, ``MAX_STEPS`` at most and ``OTHER``."""

    def __init__(self) -> None:
        self._steps: dict[str, Step] = {}

    def _get(self, name: str) -> Step:
        name = name[:MAX_STEP_NAME]
        steps = self._steps
        step = steps.get(name)
        if step is None:
            if len(steps) - (OTHER in steps) >= MAX_STEPS:
                name = OTHER
            step = steps.get(name)
            if step is None:
                step = steps[name] = Step()
        return step

    def record(self, name: str, latency_us: int | None, failed: bool) -> None:
        """A request of step ``name``: with its latency (None for a failed request without
        a response: no latency) and whether it failed."""
        step = self._get(name)
        step.requests += 1
        step.errors += failed
        if latency_us is not None:
            step.latency.record(latency_us)

    def __len__(self) -> int:
        return len(self._steps)

    def items(self) -> list[tuple[str, Step]]:
        """The steps in the order first seen (``OTHER`` where it was first needed)."""
        return list(self._steps.items())

    def to_json(self) -> dict[str, Any]:
        return {name: step.to_json() for name, step in self._steps.items()}

    def absorb(self, steps: dict[str, Step]) -> None:
        """Add steps (``from_json``'s), keeping the bound."""
        for name, step in steps.items():
            self._get(name).add(step)


def from_json(d: Any) -> dict[str, Step]:
    """The steps ``Steps.to_json`` described. Raises ValueError when ``d`` is malformed (it
    comes from another process)."""
    if not isinstance(d, dict) or len(d) > MAX_STEPS + 1:
        raise ValueError(f"a report's steps are at most {MAX_STEPS + 1} by name: {d!r:.200}")
    out = {}
    for name, step in d.items():
        if len(name) > MAX_STEP_NAME or not isinstance(step, dict):
            raise ValueError(f"a report's step {name!r:.120} is malformed")
        if set(step) != {"requests", "errors", "latency"}:
            raise ValueError(f"a report's step {name!r:.120} is malformed: {step!r:.200}")
        requests, errors = step["requests"], step["errors"]
        latency = Histogram.from_json(step["latency"])
        counts = all(type(n) is int and n >= 0 for n in (requests, errors))
        if not (counts and errors <= requests and latency.count <= requests):
            raise ValueError(f"a report's step {name!r:.120} does not add up: {step!r:.200}")
        one = out[name] = Step()
        one.requests, one.errors, one.latency = requests, errors, latency
    return out

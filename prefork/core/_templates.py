"""The templates of one broker (``template=True``, ``--template``), as a state machine of its
own: which generations have one, which must be started or stopped, and when one importing
too long is killed.

A template is a process per generation that imports the code once, freezes it for the
garbage collector (``gc.freeze``) and forks that generation's workers on request, so they
share its memory and start without importing. A generation's workers are spawned only once
its template is ready; the supervisor decides which generations are wanted (the serving one,
and the one a reload rolls onto) and when a template that failed may start again.

    STARTING --ready--> READY --stop--> STOPPING --reaped--> (gone)
        |                                   ^
        +--stop, boot_timeout (killed)------+

Pure, like ``_rolling.py``: about generations only, no processes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from prefork.core._events import Action, StartTemplate, StopTemplate


class TemplateState(enum.Enum):
    STARTING = "starting"  # forked, importing: boot_timeout runs
    READY = "ready"  # imported: the generation's workers fork from it
    STOPPING = "stopping"  # asked to leave: reaped soon


@dataclass(slots=True)
class TemplateRecord:
    generation: int
    started: float
    state: TemplateState = TemplateState.STARTING
    ready_at: float | None = None
    failure: str = ""  # why the supervisor killed it (it imported too long)
    promoted_from: int | None = None  # forked by this worker (a refork), not from disk
    answered: bool = True  # False: the worker has not named its pid yet (no process known)


class Templates:
    """The templates of the broker ``broker``, by generation."""

    __slots__ = ("broker", "by_generation")

    def __init__(self, broker: str) -> None:
        self.broker = broker
        self.by_generation: dict[int, TemplateRecord] = {}

    def ready(self, generation: int) -> bool:
        """Whether workers of ``generation`` may be spawned: its template is ready."""
        t = self.by_generation.get(generation)
        return t is not None and t.state is TemplateState.READY

    def missing(self, wanted: Iterable[int]) -> bool:
        """Whether a wanted generation has no template."""
        return any(g not in self.by_generation for g in wanted)

    def keep(self, wanted: set[int], now: float, may_start: bool, out: list[Action]) -> None:
        """Stop the templates of generations not ``wanted``; start one for each wanted
        generation without one (unless ``may_start`` is False: a backoff holds it back)."""
        for t in list(self.by_generation.values()):
            if t.generation not in wanted and t.state is not TemplateState.STOPPING:
                self.stop(t, out)
        if may_start:
            for generation in sorted(wanted - self.by_generation.keys()):
                self.by_generation[generation] = TemplateRecord(generation, now)
                out.append(StartTemplate(self.broker, generation))

    def stop(self, t: TemplateRecord, out: list[Action]) -> None:
        """Ask ``t`` to leave; one still importing is killed (it would finish first). One a
        worker has not named yet is forgotten: if it names it later, it is killed then."""
        kill = t.state is TemplateState.STARTING
        t.state = TemplateState.STOPPING
        out.append(StopTemplate(self.broker, t.generation, kill=kill))
        if not t.answered:
            del self.by_generation[t.generation]

    def on_ready(self, generation: int, now: float) -> TemplateRecord | None:
        """The template of ``generation`` is ready; returns it (None: not one that starts)."""
        t = self.by_generation.get(generation)
        if t is None or t.state is not TemplateState.STARTING:
            return None
        t.state, t.ready_at = TemplateState.READY, now
        return t

    def on_exit(self, generation: int) -> TemplateRecord | None:
        """The template of ``generation`` was reaped; returns its record (None: unknown)."""
        return self.by_generation.pop(generation, None)

    def deadline(self, boot_timeout: float) -> float | None:
        """When the earliest template still importing runs out of ``boot_timeout``."""
        return min(
            (
                t.started + boot_timeout
                for t in self.by_generation.values()
                if t.state is TemplateState.STARTING
            ),
            default=None,
        )

    def expire(self, now: float, boot_timeout: float, out: list[Action]) -> None:
        """Kill every template that has been importing for ``boot_timeout``."""
        for t in list(self.by_generation.values()):
            if t.state is TemplateState.STARTING and now >= t.started + boot_timeout:
                t.failure = f"did not import within boot_timeout ({boot_timeout:g}s)"
                self.stop(t, out)

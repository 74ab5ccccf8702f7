"""The templates of one broker (``template=True``, ``--template``), as a state machine of its
own: which generations have one, which must be started or stopped, and when one importing
too long is killed.

A template is a process per generation that imports the code once, freezes it for the
garbage collector (``gc.freeze``) and forks that generation's workers on request, so they
share its memory and start without importing. A generation's workers are spawned only once
its template is ready; the supervisor decides which generations are wanted (the serving one,
and the one a reload rolls onto) and when a template that failed may start again.

    STARTING --ready--> READY --stop--> STOPPING --reaped--> (gone)
        |   |                               ^
        |   +--ready, unsafe (auto)--> UNUSED --stop (reaped already: gone)
        +--stop, boot_timeout (killed)------+

An UNUSED template imported, but its import left threads or sockets open (``--template
auto``): it is asked to leave at once, and its generation's workers import the code
themselves (``unused``). Its record stays while the generation is wanted, so that no other
template is started for it; the next generation tries a template again.

Pure, like ``_rolling.py``: about generations only, no processes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from prefork.core._events import Action, StartTemplate, StopTemplate


def templates_used(mode: str, preload: bool, refork: bool, prepares: bool) -> tuple[bool, bool]:
    """Whether a broker with ``--template mode`` forks its workers from templates, and
    whether a template whose import left threads or sockets open is then not used (``auto``).
    ``prepares``: the worker class imports something in the template (it overrides
    ``prepare_template``; a ``"module:attr"`` worker is not imported by the master, which
    cannot tell): without it, and without ``refork`` (``refork_after``), a template would
    only cost a process (and delay the first workers by an import)."""
    if mode == "auto":
        used = (prepares or refork) and not preload
        return used, used
    return mode == "on", False


def template_choice(mode: str, preload: bool, refork: bool, prepares: bool) -> str:
    """One line saying what ``--template mode`` gives (``prefork serve --check-config``)."""
    used, fallback = templates_used(mode, preload, refork, prepares)
    if not used:
        why = "the worker imports nothing in one"
        if mode == "off" or preload:
            why = "--preload" if preload else "--template off"
        return f"template {mode}: no templates ({why}); workers import the code"
    if not fallback:
        return "template on: a template per generation, whatever its import leaves running"
    return (
        "template auto: a template per generation, unless its import leaves threads or "
        "sockets open (then that generation's workers import the code themselves)"
    )


class TemplateState(enum.Enum):
    STARTING = "starting"  # forked, importing: boot_timeout runs
    READY = "ready"  # imported: the generation's workers fork from it
    STOPPING = "stopping"  # asked to leave: reaped soon
    UNUSED = "unused"  # imported with threads or sockets open (auto): workers import themselves


@dataclass(slots=True)
class TemplateRecord:
    generation: int
    started: float
    state: TemplateState = TemplateState.STARTING
    ready_at: float | None = None
    failure: str = ""  # why the supervisor killed it (it imported too long)
    promoted_from: int | None = None  # forked by this worker (a refork), not from disk
    answered: bool = True  # False: the worker has not named its pid yet (no process known)
    left: bool = False  # UNUSED, and its process reaped already


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

    def unused(self, generation: int) -> bool:
        """Whether the workers of ``generation`` import the code themselves: its template
        was not used."""
        t = self.by_generation.get(generation)
        return t is not None and t.state is TemplateState.UNUSED

    def spawnable(self, generation: int) -> bool:
        """Whether workers of ``generation`` may be spawned: its template is ready, or was
        not used (they import the code themselves)."""
        return self.ready(generation) or self.unused(generation)

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
        worker has not named yet is forgotten: if it names it later, it is killed then. An
        unused one was asked to leave already: it is forgotten once reaped."""
        if t.state is TemplateState.UNUSED:
            if t.left:
                del self.by_generation[t.generation]
            else:
                t.state = TemplateState.STOPPING
            return
        kill = t.state is TemplateState.STARTING
        t.state = TemplateState.STOPPING
        out.append(StopTemplate(self.broker, t.generation, kill=kill))
        if not t.answered:
            del self.by_generation[t.generation]

    def on_ready(self, generation: int, now: float, unused: bool) -> TemplateRecord | None:
        """The template of ``generation`` is ready (``unused``: but it is not used, and asked
        to leave); returns it (None: not one that starts)."""
        t = self.by_generation.get(generation)
        if t is None or t.state is not TemplateState.STARTING:
            return None
        t.state, t.ready_at = TemplateState.READY, now
        if unused:
            t.state = TemplateState.UNUSED
        return t

    def on_exit(self, generation: int) -> TemplateRecord | None:
        """The template of ``generation`` was reaped; returns its record (None: unknown, or
        unused: that one is kept while its generation is wanted)."""
        t = self.by_generation.get(generation)
        if t is not None and t.state is TemplateState.UNUSED:
            t.left = True
            return None
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

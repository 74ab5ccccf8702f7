"""A rolling replacement of one broker's workers, as a state machine of its own.

A reload, a recycle, a worker's ``retire`` or its memory limit puts old workers in a queue.
For the head of the queue a replacement is spawned first (the broker runs N+1), and the old
worker is stopped only once the replacement said it is ready: a "swap". If the replacement
fails before that, the whole queue is dropped and the old workers keep serving; a reload so
ended is rolled back (``reload_failed``, with the reason).

Pure, and about worker ids only: the supervisor says when a worker is ready, leaves or fails,
spawns the replacements (``advance`` asks it to) and stops the old workers it is handed back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from prefork.core._events import Action, Emit, Log
from prefork.core._payloads import ReloadResult


@dataclass(slots=True)
class Swap:
    """The replacement being waited for (``new``), and the worker it replaces (``old``; None
    once that one has left by itself)."""

    old: int | None
    new: int


@dataclass(slots=True)
class ReloadRecord:
    """The latest rolling reload of a broker: what ``prefork ctl`` and the metrics report."""

    generation: int
    started: float
    result: str = "running"  # then "done" or "failed"
    reason: str = ""  # why it failed
    replaced: int = 0
    finished: float | None = None
    refork: bool = False  # onto a template a worker forked (``_refork.py``)

    def duration(self, now: float) -> float:
        """Seconds it took (so far, while it runs)."""
        return (now if self.finished is None else self.finished) - self.started


class Rolling:
    """The rolling replacement of the workers of the broker ``broker``."""

    __slots__ = ("broker", "queue", "reload", "reloading", "replaced", "swap")

    def __init__(self, broker: str) -> None:
        self.broker = broker
        self.queue: list[int] = []  # the workers to replace, in order
        self.swap: Swap | None = None
        self.reloading = False
        self.replaced = 0  # by the reload running
        self.reload: ReloadRecord | None = None  # the latest reload

    @property
    def busy(self) -> set[int]:
        """The workers of the swap running (neither may be scaled down meanwhile)."""
        if self.swap is None:
            return set()
        return {self.swap.new} if self.swap.old is None else {self.swap.old, self.swap.new}

    @property
    def standing_in(self) -> bool:
        """Whether a replacement runs beside the worker it replaces (capacity N+1)."""
        return self.swap is not None and self.swap.old is not None

    def enqueue(self, worker_id: int) -> bool:
        """Queue a live worker for replacement; False if it is queued or swapped already."""
        swapping = self.swap is not None and worker_id in (self.swap.old, self.swap.new)
        if worker_id in self.queue or swapping:
            return False
        self.queue.append(worker_id)
        return True

    @property
    def waiting_for(self) -> int | None:
        """The replacement the swap running waits for (None: no swap runs)."""
        return None if self.swap is None else self.swap.new

    def start_reload(
        self, generation: int, now: float, old: list[int], *, refork: bool = False
    ) -> None:
        """A reload to ``generation`` replaces ``old`` (oldest first), whatever ran before: the
        replacement an earlier reload waited for (``waiting_for``) is the supervisor's to
        stop."""
        self.swap = None
        self.reloading, self.replaced = True, 0
        self.reload = ReloadRecord(generation, now, refork=refork)
        self.queue = list(old)

    def advance(self, now: float, spawn: Callable[[], int] | None, out: list[Action]) -> None:
        """When no swap runs: start the next (``spawn`` makes the replacement and gives its
        id; None while the broker may not spawn: backoff), or end the reload whose queue is
        done."""
        if self.swap is None and self.queue and spawn is not None:
            old = self.queue.pop(0)
            self.swap = Swap(old, spawn())
        if self.swap is None and not self.queue and self.reloading:
            msg = f"[{self.broker}] reload done: {self.replaced} worker(s) replaced"
            out.append(Log(logging.INFO, msg))
            self.end_reload(now, out)

    def ready(self, worker_id: int, out: list[Action]) -> int | None:
        """``worker_id`` is ready. If it is the replacement waited for, the swap is done:
        returns the worker it replaces, to stop (None: none, or it left by itself)."""
        if self.swap is None or self.swap.new != worker_id:
            return None
        old = self.swap.old
        if old is not None:
            msg = f"worker {old} replaced by worker {worker_id}, {len(self.queue)} to go"
            out.append(Log(logging.DEBUG, f"[{self.broker}] {msg}"))
        self.swap = None
        self.replaced += 1
        return old

    def left(self, worker_id: int) -> None:
        """``worker_id`` left: it needs no replacement any more."""
        if worker_id in self.queue:
            self.queue.remove(worker_id)
        if self.swap is not None and self.swap.old == worker_id:
            self.swap.old = None

    def failed(self, worker_id: int, reason: str, now: float, out: list[Action]) -> None:
        """``worker_id`` failed before it was ready; if it was the replacement waited for, the
        whole replacement ends: the old workers stay (a reload is rolled back)."""
        if self.swap is None or self.swap.new != worker_id:
            return
        self.swap = None
        self.queue.clear()
        if self.reloading:
            out.append(Log(logging.ERROR, f"[{self.broker}] reload rolled back: {reason}"))
            self.end_reload(now, out, reason)
        else:
            out.append(Log(logging.ERROR, f"[{self.broker}] replacement failed: {reason}"))

    def drop(self, now: float, out: list[Action], reason: str) -> None:
        """The broker drains: nothing more is replaced; a reload running ends for ``reason``."""
        self.queue.clear()
        self.swap = None
        if self.reloading:
            self.end_reload(now, out, reason)

    def end_reload(self, now: float, out: list[Action], reason: str = "") -> None:
        """The reload is done (or failed, for ``reason``): record it, tell the callbacks."""
        self.reloading = False
        record = self.reload
        assert record is not None  # made when the reload started
        record.result = "failed" if reason else "done"
        record.reason, record.replaced, record.finished = reason, self.replaced, now
        result = ReloadResult(
            self.broker, record.generation, self.replaced, reason, record.duration(now)
        )
        out.append(Emit(self.broker, "reload_failed" if reason else "reload_done", (result,)))

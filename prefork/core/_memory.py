"""``--max-worker-memory``: when the ready workers are measured, and which of them a measure
says to replace. Pure: the master reads the memory (``MeasureMemory``, then
``MemoryMeasured``); the supervisor replaces the workers named here through the rolling path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prefork.core._events import MeasureMemory
from prefork.core._roster import BrokerRecord, WorkerRecord, WorkerState

_MIB = 1 << 20


class MemoryWatch:
    """Measures the workers of brokers with a memory limit every ``interval`` seconds; a
    worker over its limit is to be replaced once it has served ``grace`` seconds (a limit
    below what a fresh worker needs must not replace workers in a loop)."""

    def __init__(self, interval: float, grace: float) -> None:
        self.interval = interval
        self.grace = grace
        self.next_at: float | None = None  # None: no broker has a limit

    def start(self, brokers: Iterable[BrokerRecord], now: float) -> None:
        if any(b.policy.max_memory for b in brokers):
            self.next_at = now + self.interval

    def due(
        self, workers: Iterable[WorkerRecord], brokers: dict[str, BrokerRecord], now: float
    ) -> MeasureMemory | None:
        """The measure to take now, if it is time (of the ready workers with a limit)."""
        if self.next_at is None or now < self.next_at:
            return None
        self.next_at = now + self.interval
        ids = tuple(
            w.id
            for w in workers
            if w.state is WorkerState.READY and brokers[w.broker].policy.max_memory
        )
        return MeasureMemory(ids) if ids else None

    def over(
        self,
        measured: Iterable[tuple[int, int]],
        workers: dict[int, WorkerRecord],
        brokers: dict[str, BrokerRecord],
        now: float,
    ) -> Iterator[tuple[WorkerRecord, str]]:
        """Of the ``(worker id, resident bytes)`` measured, the ready workers over their
        broker's limit that have served ``grace`` seconds, each with the line saying so."""
        for worker_id, rss in measured:
            w = workers.get(worker_id)
            if w is None or w.state is not WorkerState.READY or w.ready_at is None:
                continue
            limit = brokers[w.broker].policy.max_memory
            if limit and rss > limit and now - w.ready_at >= self.grace:
                yield (
                    w,
                    (
                        f"[{w.broker}] worker {w.id} (pid {w.pid}) uses {rss / _MIB:.0f} MiB, over "
                        f"max_worker_memory ({limit / _MIB:.0f} MiB): replacing it"
                    ),
                )

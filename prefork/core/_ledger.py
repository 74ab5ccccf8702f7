"""The supervisor's records of every broker and worker, and every question asked of them:
the next deadline, the status snapshot, ready and live counts. Pure, like the supervisor
(``Supervisor`` extends ``Ledger`` with the decisions).
"""

from __future__ import annotations

from prefork.core import _status
from prefork.core._payloads import BrokerStatus, WorkerInfo
from prefork.core._roster import BrokerPolicy, BrokerRecord, Expiry, WorkerRecord, WorkerState, due


class Ledger:
    """Brokers and workers as the supervisor knows them."""

    def __init__(self) -> None:
        self._brokers: dict[str, BrokerRecord] = {}
        self._workers: dict[int, WorkerRecord] = {}
        self._stopping = False
        self._memory_at: float | None = None  # when workers are measured next (memory limits)

    def add_broker(self, policy: BrokerPolicy) -> None:
        """Take on one more broker (before ``Started``: its workers spawn then)."""
        self._brokers[policy.name] = BrokerRecord(policy, policy.workers)

    def next_deadline(self) -> float | None:
        """The earliest time at which ``TimePassed`` must be handled, or None."""
        times = [d[0] for w in self._workers.values() if (d := self._due(w)) is not None]
        for b in self._brokers.values():
            if b.not_before and self._wants_spawn(b):
                times.append(b.not_before)
        if self._memory_at is not None and not self._stopping:
            times.append(self._memory_at)
        return min(times, default=None)

    def status(self, now: float) -> dict[str, BrokerStatus]:
        """A snapshot per broker: desired and live counts, generation, crash-loop backoff,
        starts, restarts and crashes, the latest reload, and a row per worker."""
        return {
            name: _status.broker_status(
                b,
                (w for w in self._workers.values() if w.broker == name),
                len(self._live(name)),
                now,
            )
            for name, b in self._brokers.items()
        }

    def all_ready(self) -> bool:
        """True when every broker that is not draining has its desired count ready."""
        return all(
            b.draining or self._ready_count(name) >= b.desired for name, b in self._brokers.items()
        )

    def reloading(self) -> bool:
        return any(b.reloading for b in self._brokers.values())

    def workers(self, broker: str) -> list[WorkerInfo]:
        """The live workers of a broker that the master may message."""
        return [self._info(w) for w in self._workers.values() if w.broker == broker and w.pid]

    def heartbeat_interval(self, broker: str) -> float:
        return self._brokers[broker].policy.heartbeat_interval

    def graceful_timeout(self, broker: str) -> float:
        return self._brokers[broker].policy.graceful_timeout

    # --- for the decisions -----------------------------------------------------------------

    def _select(self, name: str | None) -> list[BrokerRecord]:
        return list(self._brokers.values()) if name is None else [self._brokers[name]]

    def _due(self, w: WorkerRecord) -> tuple[float, Expiry] | None:
        return due(w, self._brokers[w.broker].policy)

    def _wants_spawn(self, b: BrokerRecord) -> bool:
        if b.draining or self._stopping:
            return False
        return bool(b.queue) or b.desired > len(self._live(b.policy.name))

    def _ready_count(self, broker: str) -> int:
        return sum(w.state is WorkerState.READY for w in self._live(broker))

    def _live(self, broker: str) -> list[WorkerRecord]:
        return [w for w in self._workers.values() if w.broker == broker and w.live]

    @staticmethod
    def _info(w: WorkerRecord) -> WorkerInfo:
        return WorkerInfo(w.id, w.pid, w.broker, w.generation)

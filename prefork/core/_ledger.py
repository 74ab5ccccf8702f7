"""The supervisor's records of every broker and worker, and every question asked of them:
the next deadline, the status snapshot, ready and live counts. Pure, like the supervisor,
which holds one ``Ledger`` and makes every decision; the ledger decides nothing.
"""

from __future__ import annotations

from prefork.core import _status
from prefork.core._payloads import BrokerStatus, WorkerInfo
from prefork.core._roster import BrokerPolicy, BrokerRecord, Expiry, WorkerRecord, WorkerState, due


class Ledger:
    """Brokers and workers as the supervisor knows them."""

    def __init__(self) -> None:
        self.brokers: dict[str, BrokerRecord] = {}
        self.workers: dict[int, WorkerRecord] = {}
        self.stopping = False
        self.shutdown_at: float | None = None  # a SIGTERM's stop, after the shutdown delay

    def add_broker(self, policy: BrokerPolicy) -> None:
        """Take on one more broker (before ``Started``: its workers spawn then)."""
        self.brokers[policy.name] = BrokerRecord(policy, policy.workers)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a worker, of a broker held back by its backoff, or of the
        shutdown delay."""
        times = [d[0] for w in self.workers.values() if (d := self.due(w)) is not None]
        if self.shutdown_at is not None:
            times.append(self.shutdown_at)
        for b in self.brokers.values():
            wants_template = not self.stopping and b.templates.missing(b.templates_wanted)
            if b.not_before and (self.wants_spawn(b) or wants_template):
                times.append(b.not_before)
            if (at := b.templates.deadline(b.policy.boot_timeout)) is not None:
                times.append(at)
        return min(times, default=None)

    def status(self, now: float) -> dict[str, BrokerStatus]:
        """A snapshot per broker: desired and live counts, generation, crash-loop backoff,
        starts, restarts and crashes, the latest reload, and a row per worker."""
        return {
            name: _status.broker_status(
                b,
                (w for w in self.workers.values() if w.broker == name),
                len(self.live(name)),
                now,
            )
            for name, b in self.brokers.items()
        }

    def all_ready(self) -> bool:
        """True when every broker that is not draining has its desired count ready."""
        return all(
            b.draining or self.ready_count(name) >= b.desired for name, b in self.brokers.items()
        )

    def phase(self) -> str:
        """``serving``, ``shutting down`` (the shutdown delay: serving, not ready) or
        ``stopping`` (draining every broker, then the master exits)."""
        if self.stopping:
            return "stopping"
        return "serving" if self.shutdown_at is None else "shutting down"

    def reloading(self) -> bool:
        return any(b.rolling.reloading for b in self.brokers.values())

    def reachable(self, broker: str) -> list[WorkerInfo]:
        """The live workers of a broker that the master may message."""
        return [self.info(w) for w in self.workers.values() if w.broker == broker and w.pid]

    def select(self, name: str | None) -> list[BrokerRecord]:
        """The broker ``name``, or every broker (None)."""
        return list(self.brokers.values()) if name is None else [self.brokers[name]]

    def due(self, w: WorkerRecord) -> tuple[float, Expiry] | None:
        return due(w, self.brokers[w.broker].policy)

    def wants_spawn(self, b: BrokerRecord) -> bool:
        """Whether ``b`` would start a worker now but for its backoff: one is missing, or a
        rolling replacement may start its next swap (not while one runs: that one waits for
        its worker, and a backoff long over must not stand as a deadline in the past)."""
        if b.draining or self.stopping or not b.may_spawn():
            return False  # (a template not ready yet: its readiness is an event, no deadline)
        next_swap = bool(b.rolling.queue) and b.rolling.waiting_for is None
        return next_swap or b.desired > len(self.live(b.policy.name))

    def ready_count(self, broker: str) -> int:
        return sum(w.state is WorkerState.READY for w in self.live(broker))

    def live(self, broker: str) -> list[WorkerRecord]:
        return [w for w in self.workers.values() if w.broker == broker and w.live]

    @staticmethod
    def info(w: WorkerRecord) -> WorkerInfo:
        return WorkerInfo(w.id, w.pid, w.broker, w.generation)

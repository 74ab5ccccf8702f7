"""The supervisor's hands: starting, stopping and killing workers, and bringing each broker
towards its desired count (the reconciler). Pure, like the supervisor, which decides when:
after every event it calls ``reconcile``; each command and deadline calls ``stop`` or ``kill``.

What a worker's record becomes and the action that goes out are decided together here, so the
two cannot drift: ``spawn`` makes a BOOTING record and a ``Spawn``; ``stop`` turns a READY
worker STOPPING with a ``Terminate`` (any other is killed); ``kill`` a ``Kill``.
"""

from __future__ import annotations

from prefork.core import _refork
from prefork.core._events import Action, Kill, Spawn, Terminate
from prefork.core._ledger import Ledger
from prefork.core._roster import BrokerRecord, Cause, WorkerRecord, WorkerState


class Workforce:
    """The workers of every broker in ``ledger``; ``next_id`` is the id the next one gets."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.next_id = 1

    def spawn(
        self, b: BrokerRecord, now: float, out: list[Action], *, replacing: bool = False
    ) -> int:
        """Start a worker (``replacing``: in place of one that left, or is leaving)."""
        w = WorkerRecord(self.next_id, b.policy.name, b.spawn_generation, now, heartbeat_at=now)
        self.next_id += 1
        b.started += 1
        b.restarts += replacing
        self.ledger.workers[w.id] = w
        out.append(Spawn(w.id, w.broker, w.generation, b.templates.unused(w.generation)))
        return w.id

    def stop(self, w: WorkerRecord, now: float, out: list[Action], cause: str) -> None:
        """Stop on purpose, for ``cause``: a ready worker drains (told whether a new one took
        its place); any other serves nobody."""
        w.asked, w.cause = True, cause
        if w.state is WorkerState.READY:
            w.state = WorkerState.STOPPING
            w.kill_at = now + self.ledger.brokers[w.broker].policy.graceful_timeout
            out.append(Terminate(w.id, cause == Cause.REPLACED))
        elif w.state is not WorkerState.KILLED:
            self.kill(w, out)

    @staticmethod
    def kill(w: WorkerRecord, out: list[Action]) -> None:
        w.state = WorkerState.KILLED
        out.append(Kill(w.id))

    def replace(self, w: WorkerRecord) -> bool:
        """Queue a live worker for its rolling replacement; False if it is not live or queued
        (or being replaced) already."""
        return w.live and self.ledger.brokers[w.broker].rolling.enqueue(w.id)

    # --- the reconciler ------------------------------------------------------------------

    def reconcile(self, now: float, out: list[Action]) -> None:
        """Bring each broker that is not draining towards its desired count (plus one while a
        replacement stands in), advance its rolling replacement, and keep the templates its
        generations want (the master is not stopping: the supervisor's to check)."""
        for b in self.ledger.brokers.values():
            if b.draining:
                b.templates.keep(b.templates_wanted, now, now >= b.not_before, out)
                continue
            self._advance_rolling(b, now, out)
            if (r := b.rolling.reload) is not None and r.result == "done":
                if r.refork and r.generation > b.serving:
                    _refork.done(b, now)
                b.serving = max(b.serving, r.generation)
            b.templates.keep(b.templates_wanted, now, now >= b.not_before, out)
            standing_in = b.rolling.standing_in  # capacity N+1
            missing = b.desired + standing_in - len(self.ledger.live(b.policy.name))
            if missing > 0 and now >= b.not_before and b.may_spawn():
                for _ in range(missing):
                    self.spawn(b, now, out, replacing=b.owed > 0)
                    b.owed = max(0, b.owed - 1)
            elif missing <= 0:
                b.owed = 0  # the count is met (a scale-down took their places): none owed
                if missing < 0:
                    self._shrink(b, -missing, now, out)
            if b.policy.refork_after:
                _refork.maybe_start(b, self.ledger.live(b.policy.name), now, out)

    def _advance_rolling(self, b: BrokerRecord, now: float, out: list[Action]) -> None:
        def spawn() -> int:
            return self.spawn(b, now, out, replacing=True)

        may = now >= b.not_before and b.may_spawn()
        b.rolling.advance(now, spawn if may else None, out)

    def _shrink(self, b: BrokerRecord, surplus: int, now: float, out: list[Action]) -> None:
        busy = b.rolling.busy
        live = [w for w in self.ledger.live(b.policy.name) if w.id not in busy]
        # Booting workers first (they serve nobody yet), then the youngest.
        live.sort(key=lambda w: (w.state is WorkerState.READY, -w.started, -w.id))
        for w in live[:surplus]:
            b.rolling.left(w.id)
            self.stop(w, now, out, Cause.SCALE_DOWN)

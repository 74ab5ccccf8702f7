"""What the operator asks of the brokers, decided: reload, drain, resume, scale and stop (the
signals, ``prefork ctl`` and a ``Broker``'s methods all come here as events). Pure, like the
supervisor, which routes each command to one broker or every broker and then reconciles.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prefork.core._events import Action, Log, Notify, ScaleRequested, TurnAway
from prefork.core._ledger import Ledger
from prefork.core._roster import MAX_WORKERS, BrokerRecord, Cause, WorkerState
from prefork.core._workforce import Workforce


class Commands:
    """The commands, as they change ``ledger`` and the workers of ``force``;
    ``shutdown_delay`` is how long a SIGTERM's stop serves on first."""

    def __init__(self, ledger: Ledger, force: Workforce, shutdown_delay: float) -> None:
        self.ledger = ledger
        self._force = force
        self._shutdown_delay = shutdown_delay

    def reload(self, b: BrokerRecord, now: float, out: list[Action]) -> None:
        name = b.policy.name
        if b.draining or self.ledger.stopping:
            out.append(Log(logging.INFO, f"[{name}] reload ignored: the broker is draining"))
            return
        if (booting := b.rolling.waiting_for) is not None:
            # A newer reload wins: its replacements boot the newest code.
            self._force.stop(self.ledger.workers[booting], now, out, Cause.REPLACED)
        b.generation += 1
        b.refork_step = 0  # new code from disk: cold again, the refork counts start over
        old = sorted(
            (w for w in self.ledger.live(name) if w.generation < b.generation),
            key=lambda w: w.started,
        )
        b.rolling.start_reload(b.generation, now, [w.id for w in old])
        out.append(Log(logging.INFO, f"[{name}] reloading {len(old)} worker(s)"))

    def drain(self, b: BrokerRecord, now: float, reason: str, out: list[Action]) -> None:
        was_draining = b.draining
        with _turning(b, out):
            b.draining = True
        if not was_draining and not self.ledger.stopping:
            msg = "drained: new connections are turned away; SIGUSR2 resumes, SIGINT stops"
            out.append(Log(logging.INFO, f"[{b.policy.name}] {msg}"))
        b.rolling.drop(now, out, reason)
        cause = Cause.STOP if self.ledger.stopping else Cause.DRAIN
        for w in self.ledger.live(b.policy.name):
            self._force.stop(w, now, out, cause)

    def resume(self, b: BrokerRecord, out: list[Action]) -> None:
        if b.draining and not self.ledger.stopping:
            with _turning(b, out):
                b.draining, b.failures, b.not_before = False, 0, 0.0
            out.append(Log(logging.INFO, f"[{b.policy.name}] resumed"))

    @staticmethod
    def scale(b: BrokerRecord, e: ScaleRequested, out: list[Action]) -> None:
        with _turning(b, out):
            if e.workers is not None:
                b.desired = e.workers
            elif e.delta < 0:
                b.desired = max(min(b.desired, 1), b.desired + e.delta)
            else:
                b.desired += e.delta
            # The commands refuse more; a storm of SIGTTIN stops here.
            most = " (the most)" if b.desired >= MAX_WORKERS else ""
            b.desired = min(b.desired, MAX_WORKERS)
        away = ": new connections are turned away" if b.desired == 0 and not b.draining else ""
        msg = f"scaled to {b.desired} worker(s){most}{away}"
        out.append(Log(logging.INFO, f"[{b.policy.name}] {msg}"))

    def stop_requested(self, delayed: bool, now: float, out: list[Action]) -> None:
        """A stop; a SIGTERM's (``delayed``) first serves ``shutdown_delay`` seconds more,
        while readiness says no: the load balancer stops sending before anything drains."""
        ledger = self.ledger
        if not (delayed and self._shutdown_delay) or ledger.stopping:
            self.stop(now, out)
        elif ledger.shutdown_at is None:
            ledger.shutdown_at = now + self._shutdown_delay
            msg = f"stopping in {self._shutdown_delay:g}s (--shutdown-delay): serving meanwhile"
            out.append(Log(logging.INFO, msg + ", not ready"))

    def stop(self, now: float, out: list[Action]) -> None:
        """Drain every broker, then the master exits; a second stop kills every worker."""
        self.ledger.shutdown_at = None
        if not self.ledger.stopping:
            self.ledger.stopping = True
            out.append(Notify(("STOPPING=1",)))
            out.append(Log(logging.INFO, "stopping: draining every worker"))
            for b in self.ledger.brokers.values():
                self.drain(b, now, "master stopping", out)
            return
        out.append(Log(logging.WARNING, "stopping at once: killing every worker"))
        for w in self.ledger.workers.values():
            w.asked = True
            w.cause = w.cause or Cause.STOP
            if w.state is not WorkerState.KILLED:
                self._force.kill(w, out)


@contextlib.contextmanager
def _turning(b: BrokerRecord, out: list[Action]) -> Iterator[None]:
    """Around a change of ``b``'s draining or desired count: tell the master to start or stop
    answering its connections itself when ``b.turned_away`` changes (and only then: the
    master registers a listener once)."""
    before = b.turned_away
    yield
    if b.turned_away != before:
        out.append(TurnAway(b.policy.name, on=b.turned_away))

"""Every lifecycle decision of the master, as a pure state machine.

Rule 1: everything that decides when a worker starts, stops, is killed or replaced lives here.
Rule 2: nothing here touches the OS: no os, signal, socket or time. Events come in with the
time beside them (``handle(event, now)``), actions go out as data, and ``next_deadline()``
says when the master must call back with ``TimePassed`` even if nothing else happens.
Rule 3: every dispatch is exhaustive (``match`` ending in ``assert_never``), so a new event or
state that nobody handles is a ``mypy --strict`` error, not a silent timer tick.

Theory of operation. Each broker (worker type) has a desired count. After every event,
``_reconcile`` brings each broker towards it (``_workforce.py``): it spawns missing workers
(unless a crash loop holds it back with exponential backoff), stops surplus ones, and advances
the rolling replacement. A rolling replacement (reload, recycle, or a worker's own ``retire``)
is a queue of old workers; for the head of the queue a replacement is spawned first, and the
old worker is stopped only once the replacement said it is ready ("swap"). If the replacement
fails to boot, the queue is dropped: the old workers keep serving (``reload_failed``).

Whether an exit is a crash is decided by intent: an exit the supervisor asked for (Terminate, or
Kill while stopping) is ``worker_exit``; anything else is ``worker_crash``. A worker's states
and deadlines are in ``_roster.py``.

Where the pieces are: this module routes each event and decides about workers' exits,
messages and deadlines; the operator's commands (reload, drain, resume, scale, stop) are
``_commands.py``; starting, stopping, killing and the reconciler ``_workforce.py``; the
templates' readiness and exits ``_templating.py``; what it remembers ``_ledger.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, assert_never

from prefork.core import _backoff, _exits, _handover, _refork, _templating
from prefork.core import _frames as frames
from prefork.core._commands import Commands
from prefork.core._events import (
    Action,
    ChannelBroken,
    DrainRequested,
    DumpStack,
    Emit,
    Event,
    Exit,
    Log,
    MemoryMeasured,
    MessageReceived,
    Notify,
    ReloadRequested,
    ResumeRequested,
    ScaleRequested,
    SpawnFailed,
    Started,
    StopRequested,
    TemplateExited,
    TemplateReady,
    TimePassed,
    TurnAway,
    WorkerExited,
    WorkerSpawned,
)
from prefork.core._ledger import Ledger
from prefork.core._memory import MemoryWatch
from prefork.core._payloads import BrokerStatus
from prefork.core._roster import (
    BrokerPolicy,
    Cause,
    Expiry,
    WorkerRecord,
    WorkerState,
)
from prefork.core._workforce import Workforce


class Supervisor:
    """Decides, event by event, what the master does. See the module comment."""

    #: Waking this late for a deadline means the master was stopped, not merely busy.
    MAX_OVERSLEEP = 1.0

    def __init__(
        self,
        policies: Iterable[BrokerPolicy] = (),
        *,
        random: Callable[[], float],
        dump_grace: float = 1.0,
        shutdown_delay: float = 0.0,
        memory_interval: float = 1.0,
        memory_grace: float = 5.0,
    ) -> None:
        self.ledger = Ledger()  # the records: the master's questions are answered there
        self._random = random
        self._dump_grace = dump_grace
        self._memory = MemoryWatch(memory_interval, memory_grace)  # --max-worker-memory
        self._force = Workforce(self.ledger)  # spawn, stop, kill; the reconciler
        self._commands = Commands(self.ledger, self._force, shutdown_delay)
        self._started = False
        self._exited = False
        self._exit_code = 0
        self._announced = False  # READY=1 sent since the start or the last RELOADING=1
        for policy in policies:
            self.add_broker(policy)

    # --- what the master asks ----------------------------------------------------------------

    def add_broker(self, policy: BrokerPolicy) -> None:
        """Take on one more broker (before ``Started``: its workers spawn then)."""
        self.ledger.add_broker(policy)

    def next_deadline(self) -> float | None:
        """The earliest time at which ``TimePassed`` must be handled, or None."""
        measure = None if self.ledger.stopping else self._memory.next_at
        return min(
            (t for t in (self.ledger.next_deadline(), measure) if t is not None), default=None
        )

    def status(self, now: float) -> dict[str, BrokerStatus]:
        """A snapshot per broker (``Ledger.status``)."""
        return self.ledger.status(now)

    def export(self) -> dict[str, Any]:
        """Everything this supervisor remembers, as plain data (``_handover``), for the next
        image of the master (``prefork ctl upgrade``), which ``adopt`` takes it."""
        return {
            "ledger": _handover.ledger_doc(self.ledger),
            "next_id": self._force.next_id,
            "announced": self._announced,
        }

    def adopt(self, doc: Mapping[str, Any], now: float) -> list[Action]:
        """Take over what ``export`` gave, in place of ``Started``: the workers it names run on
        (every ready one gets a fresh heartbeat window: the master was not reading meanwhile).
        Returns the actions that set the master up. Raises ``ValueError`` if ``doc`` does not
        fit this supervisor's brokers (``_handover.adopt_ledger``)."""
        _handover.adopt_ledger(self.ledger, doc.get("ledger", {}))
        ids = [
            _handover.whole(doc.get("next_id", 1)),
            *(w.id + 1 for w in self.ledger.workers.values()),
        ]
        self._force.next_id = max(ids)
        self._announced = doc.get("announced") is True
        for w in self.ledger.workers.values():
            if w.state is WorkerState.READY:
                w.heartbeat_at = now
        return self.handle(Started(), now)

    # --- events ----------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Take one event that happened at ``now`` (monotonic seconds); return the actions the
        master must perform, in order."""
        out: list[Action] = []
        commands = self._commands
        match event:
            case Started():
                self._started = True
                # A broker declared with 0 workers turns its connections away from the start.
                out += [
                    TurnAway(n, on=True) for n, b in self.ledger.brokers.items() if b.turned_away
                ]
                self._memory.start(self.ledger.brokers.values(), now)
            case WorkerSpawned(worker_id=worker_id, pid=pid):
                if (w := self.ledger.workers.get(worker_id)) is not None:
                    w.pid = pid
                    msg = f"worker {w.id} (pid {pid}, generation {w.generation}) started"
                    out.append(Log(logging.DEBUG, f"[{w.broker}] {msg}"))
            case SpawnFailed():
                self._on_spawn_failed(event, now, out)
            case WorkerExited():
                self._on_exit(event, now, out)
            case MessageReceived():
                self._on_message(event, now, out)
            case ChannelBroken():
                self._on_channel_broken(event, out)
            case ReloadRequested(broker=broker):
                if broker is None and not self.ledger.stopping:  # the operator's (systemd's) reload
                    self._announced = False
                    usec = int(now * 1_000_000)  # ``now`` is CLOCK_MONOTONIC, as systemd wants
                    out.append(Notify(("RELOADING=1", f"MONOTONIC_USEC={usec}")))
                for b in self.ledger.select(broker):
                    commands.reload(b, now, out)
            case DrainRequested(broker=broker):
                for b in self.ledger.select(broker):
                    commands.drain(b, now, "drain requested", out)
            case ResumeRequested(broker=broker):
                for b in self.ledger.select(broker):
                    commands.resume(b, out)
            case ScaleRequested(broker=broker):
                for b in self.ledger.select(broker):
                    commands.scale(b, event, out)
            case StopRequested(delayed=delayed):
                commands.stop_requested(delayed, now, out)
            case TimePassed(overslept=overslept):
                if overslept > self.MAX_OVERSLEEP:
                    self._fresh_windows(overslept, now, out)
                self._on_time(now, out)
                if (at := self.ledger.shutdown_at) is not None and now >= at:
                    commands.stop(now, out)
            case MemoryMeasured():
                self._on_memory(event, now, out)
            case TemplateReady(broker=broker):
                _templating.ready(self.ledger.brokers[broker], event, now, out)
            case TemplateExited():
                self._on_template_exit(event, now, out)
            case _:
                assert_never(event)
        if self._started:
            self._reconcile(now, out)
            self._announce(out)
        return out

    def _announce(self, out: list[Action]) -> None:
        """READY=1 once every broker has its workers ready (at start, after each reload)."""
        ledger = self.ledger
        if self._announced or ledger.stopping or ledger.reloading() or not ledger.all_ready():
            return
        self._announced = True
        brokers = ", ".join(f"{name} x{b.desired}" for name, b in self.ledger.brokers.items())
        out.append(Notify(("READY=1", f"STATUS=serving: {brokers}")))

    def _on_spawn_failed(self, e: SpawnFailed, now: float, out: list[Action]) -> None:
        w = self.ledger.workers.pop(e.worker_id)
        out.append(Log(logging.ERROR, f"[{w.broker}] could not start worker {w.id}: {e.reason}"))
        b = self.ledger.brokers[w.broker]
        if e.backoff:
            out.append(Log(logging.WARNING, _backoff.failed_early(b, now, self._jitter())))
        b.rolling.failed(w.id, f"worker {w.id} could not start: {e.reason}", now, out)

    def _on_exit(self, e: WorkerExited, now: float, out: list[Action]) -> None:
        w = self.ledger.workers.pop(e.worker_id, None)
        if w is None:
            return
        b = self.ledger.brokers[w.broker]
        why = _exits.tell(b, w, e.exit_code, e.signal, now, out)
        _refork.left(b, w.id, now, out)
        if w.asked:
            return
        b.crashes += 1
        b.owed += 1
        if not b.ever_ready and not self.ledger.stopping:
            # The first start: no worker of this broker ever became ready. A typo, an import
            # error or a failing startup must not look like a running service.
            self._halt(3, f"no {w.broker} worker could start ({why})", now, out)
            return
        if line := _backoff.crashed(b, w.ready_at, e.signal, now, self._jitter):
            out.append(Log(logging.WARNING, line))
        b.rolling.left(w.id)
        b.rolling.failed(w.id, _exits.failed(w, why), now, out)

    def _on_template_exit(self, e: TemplateExited, now: float, out: list[Action]) -> None:
        b, stopping = self.ledger.brokers[e.broker], self.ledger.stopping
        if (why := _templating.exited(b, e, now, stopping, self._jitter, out)) is not None:
            self._halt(3, why, now, out)

    def _halt(self, code: int, reason: str, now: float, out: list[Action]) -> None:
        """Stop every worker and exit with ``code``."""
        out.append(Log(logging.ERROR, f"{reason}; stopping the master (exit code {code})"))
        self._exit_code = code
        self._commands.stop(now, out)

    def _jitter(self) -> float:
        """0.5 to 1: a crash-loop wait's share, so that brokers drift apart."""
        return 0.5 + self._random() / 2

    def _on_message(self, e: MessageReceived, now: float, out: list[Action]) -> None:
        w = self.ledger.workers.get(e.worker_id)
        if w is None:
            return
        if e.kind == frames.HEARTBEAT:
            w.heartbeat_at = now
        elif e.kind == frames.READY:
            self._on_ready(w, now, out)
        elif e.kind == frames.RETIRE:
            self._force.replace(w)
        elif e.kind == frames.FAILED:
            w.error = str(e.body).rstrip()
        elif e.kind == frames.PROMOTED:
            _refork.answered(self.ledger.brokers[w.broker], w, e.body, now, out)
        else:
            if e.kind == frames.REPORT and (requests := _requests(e.body)) is not None:
                w.requests = requests
            event = "worker_message" if e.kind == frames.MESSAGE else "worker_report"
            out.append(Emit(w.broker, event, (e.body, self.ledger.info(w))))

    def _on_ready(self, w: WorkerRecord, now: float, out: list[Action]) -> None:
        if w.state is not WorkerState.BOOTING:
            return  # once only; and a worker already being stopped stays stopped
        b = self.ledger.brokers[w.broker]
        w.state, w.ready_at, w.heartbeat_at = WorkerState.READY, now, now
        b.ever_ready = True
        if b.policy.recycle_rate:
            spread = 1 - b.policy.recycle_jitter * self._random()
            w.retire_at = now + b.policy.recycle_rate * spread
        msg = f"[{w.broker}] worker {w.id} (pid {w.pid}, generation {w.generation}) is ready"
        out.append(Log(logging.INFO, msg))
        out.append(Emit(w.broker, "worker_ready", (self.ledger.info(w),)))
        old = b.rolling.ready(w.id, out)
        if old is not None:
            self._force.stop(self.ledger.workers[old], now, out, Cause.REPLACED)

    def _on_channel_broken(self, e: ChannelBroken, out: list[Action]) -> None:
        w = self.ledger.workers.get(e.worker_id)
        if w is None or w.state is WorkerState.KILLED:
            return
        w.failure, w.cause = f"sent a bad frame ({e.reason})", Cause.BAD_FRAME
        out.append(Log(logging.ERROR, f"[{w.broker}] worker {w.id} {w.failure}; replacing it"))
        self._force.kill(w, out)

    def _fresh_windows(self, overslept: float, now: float, out: list[Action]) -> None:
        """The master itself was not running: a worker's silence over that time says nothing
        about the worker (its heartbeats were read, but too late to count), so every ready
        worker gets a whole ``timeout`` from now instead of being killed as hung."""
        out.append(
            Log(
                logging.WARNING,
                f"the master was not running for {overslept:.1f}s; "
                "every worker gets a fresh heartbeat window",
            )
        )
        for w in self.ledger.workers.values():
            if w.state is WorkerState.READY:
                w.heartbeat_at = now

    def _on_time(self, now: float, out: list[Action]) -> None:
        for b in self.ledger.brokers.values():
            _refork.expire(b, now, out)
            b.templates.expire(now, b.policy.boot_timeout, out)
        for w in list(self.ledger.workers.values()):
            while (d := self.ledger.due(w)) is not None and now >= d[0]:
                self._expire(w, d[1], now, out)
        if not self.ledger.stopping:
            measure = self._memory.due(self.ledger.workers.values(), self.ledger.brokers, now)
            if measure is not None:
                out.append(measure)

    def _on_memory(self, e: MemoryMeasured, now: float, out: list[Action]) -> None:
        """Replace, through the rolling path, the workers whose memory passed the limit."""
        ledger = self.ledger
        for w, line in self._memory.over(e.rss, ledger.workers, ledger.brokers, now):
            if self._force.replace(w):
                out.append(Log(logging.WARNING, line))

    def _expire(self, w: WorkerRecord, expiry: Expiry, now: float, out: list[Action]) -> None:
        """``w``'s deadline for ``expiry`` has come (``due`` said which)."""
        p = self.ledger.brokers[w.broker].policy
        match expiry:
            case Expiry.BOOT_TIMEOUT:
                w.failure, w.cause = (
                    f"missed boot_timeout ({p.boot_timeout:g}s)",
                    Cause.BOOT_TIMEOUT,
                )
                self._force.kill(w, out)
            case Expiry.HUNG:
                w.failure = f"sent no heartbeat for {p.timeout:g}s (hung): stack dumped, killed"
                w.cause = Cause.HUNG
                msg = f"[{w.broker}] worker {w.id} (pid {w.pid}) is hung; dumping its stack"
                out.append(Log(logging.ERROR, msg))
                out.append(DumpStack(w.id))
                w.state, w.kill_at = WorkerState.HUNG, now + self._dump_grace
            case Expiry.RECYCLE:
                w.retire_at = None
                self._force.replace(w)
            case Expiry.KILL:
                if w.state is WorkerState.STOPPING:
                    w.failure = f"did not leave within graceful_timeout ({p.graceful_timeout:g}s)"
                    w.cause = Cause.GRACEFUL_TIMEOUT
                    msg = f"[{w.broker}] worker {w.id} {w.failure}; killing it"
                    out.append(Log(logging.WARNING, msg))
                self._force.kill(w, out)
            case _:
                assert_never(expiry)

    def _reconcile(self, now: float, out: list[Action]) -> None:
        if not self.ledger.stopping:
            self._force.reconcile(now, out)
            return
        templates = False
        for b in self.ledger.brokers.values():
            b.templates.keep(set(), now, False, out)
            templates = templates or bool(b.templates.by_generation)
        if not self.ledger.workers and not templates and not self._exited:
            self._exited = True
            out.append(Log(logging.INFO, "every worker has left; master exiting"))
            out.append(Exit(self._exit_code))


def _requests(body: Any) -> int | None:
    """The requests a worker's report counts (``{"status": {"requests": N}}``, as the HTTP
    worker sends), or None."""
    status = body.get("status") if isinstance(body, dict) else None
    n = status.get("requests") if isinstance(status, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None

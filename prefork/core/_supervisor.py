"""Every lifecycle decision of the master, as a pure state machine.

Rule 1: everything that decides when a worker starts, stops, is killed or replaced lives here.
Rule 2: nothing here touches the OS: no os, signal, socket or time. Events come in with the
time beside them (``handle(event, now)``), actions go out as data, and ``next_deadline()``
says when the master must call back with ``TimePassed`` even if nothing else happens.
Rule 3: every dispatch is exhaustive (``match`` ending in ``assert_never``), so a new event or
state that nobody handles is a ``mypy --strict`` error, not a silent timer tick.

Theory of operation. Each broker (worker type) has a desired count. After every event,
``_reconcile`` brings each broker towards it: it spawns missing workers (unless a crash loop
holds it back with exponential backoff), stops surplus ones, and advances the rolling
replacement. A rolling replacement (reload, recycle, or a worker's own ``retire``) is a queue
of old workers; for the head of the queue a replacement is spawned first, and the old worker is
stopped only once the replacement said it is ready ("swap"). If the replacement fails to boot,
the queue is dropped: the old workers keep serving (``reload_failed``).

Whether an exit is a crash is decided by intent: an exit the supervisor asked for (Terminate, or
Kill while stopping) is ``worker_exit``; anything else is ``worker_crash``. A worker's states
and deadlines are in ``_roster.py``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, assert_never

from prefork.core import _backoff, _exits, _handover
from prefork.core import _frames as frames
from prefork.core._events import (
    Action,
    ChannelBroken,
    DrainRequested,
    DumpStack,
    Emit,
    Event,
    Exit,
    Kill,
    Log,
    MemoryMeasured,
    MessageReceived,
    Notify,
    ReloadRequested,
    ResumeRequested,
    ScaleRequested,
    Spawn,
    SpawnFailed,
    Started,
    StopRequested,
    TemplateExited,
    TemplateReady,
    Terminate,
    TimePassed,
    TurnAway,
    WorkerExited,
    WorkerSpawned,
)
from prefork.core._ledger import Ledger
from prefork.core._memory import MemoryWatch
from prefork.core._payloads import BrokerStatus
from prefork.core._roster import (
    MAX_WORKERS,
    BrokerPolicy,
    BrokerRecord,
    Cause,
    Expiry,
    WorkerRecord,
    WorkerState,
)
from prefork.core._templates import TemplateState


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
        self._shutdown_delay = shutdown_delay
        self._memory = MemoryWatch(memory_interval, memory_grace)  # --max-worker-memory
        self._next_id = 1
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
            "next_id": self._next_id,
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
        self._next_id = max(ids)
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
                    self._start_reload(b, now, out)
            case DrainRequested(broker=broker):
                for b in self.ledger.select(broker):
                    self._drain(b, now, "drain requested", out)
            case ResumeRequested(broker=broker):
                for b in self.ledger.select(broker):
                    self._resume(b, out)
            case ScaleRequested(broker=broker):
                for b in self.ledger.select(broker):
                    self._scale(b, event, out)
            case StopRequested(delayed=delayed):
                self._on_stop_requested(delayed, now, out)
            case TimePassed(overslept=overslept):
                if overslept > self.MAX_OVERSLEEP:
                    self._fresh_windows(overslept, now, out)
                self._on_time(now, out)
                if (at := self.ledger.shutdown_at) is not None and now >= at:
                    self._on_stop(now, out)
            case MemoryMeasured():
                self._on_memory(event, now, out)
            case TemplateReady(broker=broker, generation=generation):
                if (
                    t := self.ledger.brokers[broker].templates.on_ready(generation, now)
                ) is not None:
                    took = f"imported in {now - t.started:.2f}s"
                    msg = f"[{broker}] template of generation {generation} is ready ({took})"
                    out.append(Log(logging.INFO, msg))
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
        b = self.ledger.brokers[e.broker]
        t = b.templates.on_exit(e.generation)
        if t is None:
            return
        name, g = e.broker, e.generation
        if t.state is TemplateState.STOPPING and not t.failure:
            out.append(Log(logging.DEBUG, f"[{name}] template of generation {g} left"))
            return
        reason = f"the template of generation {g} {_exits.template_exit(t, e)}"
        if e.error and e.error != b.last_error:
            b.last_error = e.error
            out.append(
                Log(
                    logging.ERROR,
                    f"[{name}] template of generation {g} could not start:\n{e.error}",
                )
            )
        if t.ready_at is None and not b.ever_ready and not self.ledger.stopping:
            self._halt(3, f"no {name} worker could start ({reason})", now, out)
            return
        if t.ready_at is not None and e.signal is not None:
            # Killed after it served (the OOM killer, a kill storm): its code imports, so it
            # starts again at once, rate-capped as a killed worker's replacement is.
            delay = _backoff.killed_after_ready(b, now)
            wait = f"in {delay:.2f}s" if delay else "now"
            out.append(Log(logging.WARNING, f"[{name}] {reason}; starting it again {wait}"))
            return
        out.append(Log(logging.ERROR, f"[{name}] {reason}"))
        out.append(Log(logging.WARNING, _backoff.failed_early(b, now, self._jitter())))
        rolling = b.rolling
        if t.ready_at is None and rolling.reloading and g == b.generation:
            out.append(Log(logging.ERROR, f"[{name}] reload rolled back: {reason}"))
            rolling.drop(now, out, reason)

    def _halt(self, code: int, reason: str, now: float, out: list[Action]) -> None:
        """Stop every worker and exit with ``code``."""
        out.append(Log(logging.ERROR, f"{reason}; stopping the master (exit code {code})"))
        self._exit_code = code
        self._on_stop(now, out)

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
            self._replace(w)
        elif e.kind == frames.FAILED:
            w.error = str(e.body).rstrip()
        else:
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
            self._stop(self.ledger.workers[old], now, out, Cause.REPLACED)

    def _on_channel_broken(self, e: ChannelBroken, out: list[Action]) -> None:
        w = self.ledger.workers.get(e.worker_id)
        if w is None or w.state is WorkerState.KILLED:
            return
        w.failure, w.cause = f"sent a bad frame ({e.reason})", Cause.BAD_FRAME
        out.append(Log(logging.ERROR, f"[{w.broker}] worker {w.id} {w.failure}; replacing it"))
        self._kill(w, out)

    def _start_reload(self, b: BrokerRecord, now: float, out: list[Action]) -> None:
        name = b.policy.name
        if b.draining or self.ledger.stopping:
            out.append(Log(logging.INFO, f"[{name}] reload ignored: the broker is draining"))
            return
        if (booting := b.rolling.waiting_for) is not None:
            # A newer reload wins: its replacements boot the newest code.
            self._stop(self.ledger.workers[booting], now, out, Cause.REPLACED)
        b.generation += 1
        old = sorted(
            (w for w in self.ledger.live(name) if w.generation < b.generation),
            key=lambda w: w.started,
        )
        b.rolling.start_reload(b.generation, now, [w.id for w in old])
        out.append(Log(logging.INFO, f"[{name}] reloading {len(old)} worker(s)"))

    def _drain(self, b: BrokerRecord, now: float, reason: str, out: list[Action]) -> None:
        was_draining = b.draining
        with _turning(b, out):
            b.draining = True
        if not was_draining and not self.ledger.stopping:
            msg = "drained: new connections are turned away; SIGUSR2 resumes, SIGINT stops"
            out.append(Log(logging.INFO, f"[{b.policy.name}] {msg}"))
        b.rolling.drop(now, out, reason)
        cause = Cause.STOP if self.ledger.stopping else Cause.DRAIN
        for w in self.ledger.live(b.policy.name):
            self._stop(w, now, out, cause)

    def _resume(self, b: BrokerRecord, out: list[Action]) -> None:
        if b.draining and not self.ledger.stopping:
            with _turning(b, out):
                b.draining, b.failures, b.not_before = False, 0, 0.0
            out.append(Log(logging.INFO, f"[{b.policy.name}] resumed"))

    def _scale(self, b: BrokerRecord, e: ScaleRequested, out: list[Action]) -> None:
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

    def _on_stop_requested(self, delayed: bool, now: float, out: list[Action]) -> None:
        """A stop; a SIGTERM's (``delayed``) first serves ``shutdown_delay`` seconds more,
        while readiness says no: the load balancer stops sending before anything drains."""
        ledger = self.ledger
        if not (delayed and self._shutdown_delay) or ledger.stopping:
            self._on_stop(now, out)
        elif ledger.shutdown_at is None:
            ledger.shutdown_at = now + self._shutdown_delay
            msg = f"stopping in {self._shutdown_delay:g}s (--shutdown-delay): serving meanwhile"
            out.append(Log(logging.INFO, msg + ", not ready"))

    def _on_stop(self, now: float, out: list[Action]) -> None:
        self.ledger.shutdown_at = None
        if not self.ledger.stopping:
            self.ledger.stopping = True
            out.append(Notify(("STOPPING=1",)))
            out.append(Log(logging.INFO, "stopping: draining every worker"))
            for b in self.ledger.brokers.values():
                self._drain(b, now, "master stopping", out)
            return
        out.append(Log(logging.WARNING, "stopping at once: killing every worker"))
        for w in self.ledger.workers.values():
            w.asked = True
            w.cause = w.cause or Cause.STOP
            if w.state is not WorkerState.KILLED:
                self._kill(w, out)

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
            if self._replace(w):
                out.append(Log(logging.WARNING, line))

    def _replace(self, w: WorkerRecord) -> bool:
        """Queue a live worker for its rolling replacement; False if it is not live or queued
        (or being replaced) already."""
        return w.live and self.ledger.brokers[w.broker].rolling.enqueue(w.id)

    def _expire(self, w: WorkerRecord, expiry: Expiry, now: float, out: list[Action]) -> None:
        """``w``'s deadline for ``expiry`` has come (``due`` said which)."""
        p = self.ledger.brokers[w.broker].policy
        match expiry:
            case Expiry.BOOT_TIMEOUT:
                w.failure, w.cause = (
                    f"missed boot_timeout ({p.boot_timeout:g}s)",
                    Cause.BOOT_TIMEOUT,
                )
                self._kill(w, out)
            case Expiry.HUNG:
                w.failure = f"sent no heartbeat for {p.timeout:g}s (hung): stack dumped, killed"
                w.cause = Cause.HUNG
                msg = f"[{w.broker}] worker {w.id} (pid {w.pid}) is hung; dumping its stack"
                out.append(Log(logging.ERROR, msg))
                out.append(DumpStack(w.id))
                w.state, w.kill_at = WorkerState.HUNG, now + self._dump_grace
            case Expiry.RECYCLE:
                w.retire_at = None
                self._replace(w)
            case Expiry.KILL:
                if w.state is WorkerState.STOPPING:
                    w.failure = f"did not leave within graceful_timeout ({p.graceful_timeout:g}s)"
                    w.cause = Cause.GRACEFUL_TIMEOUT
                    msg = f"[{w.broker}] worker {w.id} {w.failure}; killing it"
                    out.append(Log(logging.WARNING, msg))
                self._kill(w, out)
            case _:
                assert_never(expiry)

    # --- the reconciler ------------------------------------------------------------------

    def _reconcile(self, now: float, out: list[Action]) -> None:
        if self.ledger.stopping:
            templates = False
            for b in self.ledger.brokers.values():
                b.templates.keep(set(), now, False, out)
                templates = templates or bool(b.templates.by_generation)
            if not self.ledger.workers and not templates and not self._exited:
                self._exited = True
                out.append(Log(logging.INFO, "every worker has left; master exiting"))
                out.append(Exit(self._exit_code))
            return
        for b in self.ledger.brokers.values():
            if b.draining:
                b.templates.keep(b.templates_wanted, now, now >= b.not_before, out)
                continue
            self._advance_rolling(b, now, out)
            if (r := b.rolling.reload) is not None and r.result == "done":
                b.serving = max(b.serving, r.generation)
            b.templates.keep(b.templates_wanted, now, now >= b.not_before, out)
            standing_in = b.rolling.standing_in  # capacity N+1
            missing = b.desired + standing_in - len(self.ledger.live(b.policy.name))
            if missing > 0 and now >= b.not_before and b.may_spawn():
                for _ in range(missing):
                    self._spawn(b, now, out, replacing=b.owed > 0)
                    b.owed = max(0, b.owed - 1)
            elif missing <= 0:
                b.owed = 0  # the count is met (a scale-down took their places): none owed
                if missing < 0:
                    self._shrink(b, -missing, now, out)

    def _advance_rolling(self, b: BrokerRecord, now: float, out: list[Action]) -> None:
        def spawn() -> int:
            return self._spawn(b, now, out, replacing=True)

        may = now >= b.not_before and b.may_spawn()
        b.rolling.advance(now, spawn if may else None, out)

    def _shrink(self, b: BrokerRecord, surplus: int, now: float, out: list[Action]) -> None:
        busy = b.rolling.busy
        live = [w for w in self.ledger.live(b.policy.name) if w.id not in busy]
        # Booting workers first (they serve nobody yet), then the youngest.
        live.sort(key=lambda w: (w.state is WorkerState.READY, -w.started, -w.id))
        for w in live[:surplus]:
            b.rolling.left(w.id)
            self._stop(w, now, out, Cause.SCALE_DOWN)

    def _spawn(
        self, b: BrokerRecord, now: float, out: list[Action], *, replacing: bool = False
    ) -> int:
        """Start a worker (``replacing``: in place of one that left, or is leaving)."""
        w = WorkerRecord(self._next_id, b.policy.name, b.spawn_generation, now, heartbeat_at=now)
        self._next_id += 1
        b.started += 1
        b.restarts += replacing
        self.ledger.workers[w.id] = w
        out.append(Spawn(w.id, w.broker, w.generation))
        return w.id

    def _stop(self, w: WorkerRecord, now: float, out: list[Action], cause: str) -> None:
        """Stop on purpose, for ``cause``: a ready worker drains (told whether a new one took
        its place); any other serves nobody."""
        w.asked, w.cause = True, cause
        if w.state is WorkerState.READY:
            w.state = WorkerState.STOPPING
            w.kill_at = now + self.ledger.brokers[w.broker].policy.graceful_timeout
            out.append(Terminate(w.id, cause == Cause.REPLACED))
        elif w.state is not WorkerState.KILLED:
            self._kill(w, out)

    @staticmethod
    def _kill(w: WorkerRecord, out: list[Action]) -> None:
        w.state = WorkerState.KILLED
        out.append(Kill(w.id))


@contextlib.contextmanager
def _turning(b: BrokerRecord, out: list[Action]) -> Iterator[None]:
    """Around a change of ``b``'s draining or desired count: tell the master to start or stop
    answering its connections itself when ``b.turned_away`` changes (and only then: the
    master registers a listener once)."""
    before = b.turned_away
    yield
    if b.turned_away != before:
        out.append(TurnAway(b.policy.name, on=b.turned_away))

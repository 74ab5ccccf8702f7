"""What the supervisor remembers: the policy of each broker and a record per worker.

Plain data and the one function that reads a worker's deadline off its state (``due``); the
decisions are all in ``_supervisor.py``.

A worker moves through these states (h11's ``_state.py`` idea: the state says what the worker
is waiting for, so one function gives its next deadline, and nothing else can drift from it):

    BOOTING --ready--> READY --Terminate--> STOPPING --deadline--> KILLED --reaped--> (gone)
       |                 |                                           ^
       |                 +--no heartbeat--> HUNG --deadline----------+
       +--boot_timeout, a bad frame, a stop (Kill)-------------------+

Whether the master asked the worker to leave is one flag, ``asked`` (Node's
``exitedAfterDisconnect``): it decides ``worker_exit`` against ``worker_crash``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import assert_never

from prefork.core._rolling import Rolling
from prefork.core._templates import Templates

#: The most worker processes one broker may have (options, ctl scale, SIGTTIN): more is a
#: typo, and 10**26 would fork forever.
MAX_WORKERS = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerPolicy:
    """What the supervisor needs to know of one broker. Times in seconds; 0 turns one off.

    No defaults here: ``config.policy_of`` builds it from the declared options.
    """

    name: str
    workers: int
    recycle_rate: float
    timeout: float
    boot_timeout: float
    graceful_timeout: float
    backoff_base: float
    backoff_cap: float
    backoff_reset: float
    max_memory: int = 0  # bytes of RSS beyond which a worker is replaced (0: no limit)
    recycle_jitter: float = 0.1  # a fixed spread, not an option: recycles must not line up
    template: bool = False  # workers fork from a template per generation (``_templates.py``)
    # ``--template auto``: a template whose import left threads or sockets open is not used
    template_fallback: bool = False
    refork_after: tuple[int, ...] = ()  # requests after which a worker becomes the template

    @property
    def heartbeat_interval(self) -> float:
        """How often a worker beats: three times per ``timeout`` (two beats may be late before
        the master acts), never when timeouts are off. Each beat wakes the master."""
        return self.timeout / 3 if self.timeout else 0.0


class WorkerState(enum.Enum):
    BOOTING = "booting"  # forked, not ready yet: boot_timeout runs
    READY = "ready"  # serving: heartbeats expected, maybe a recycle time
    STOPPING = "stopping"  # asked to leave (SIGTERM): SIGKILL at ``kill_at``
    HUNG = "hung"  # missed its heartbeats, stack dump asked: SIGKILL at ``kill_at``
    KILLED = "killed"  # SIGKILL sent: waiting for the reaper, no deadline


class Expiry(enum.Enum):
    """What happens when a worker's deadline comes."""

    BOOT_TIMEOUT = "boot timeout"
    HUNG = "no heartbeat"
    RECYCLE = "recycle"
    KILL = "kill"


@dataclass(slots=True)
class WorkerRecord:
    id: int
    broker: str
    generation: int
    started: float
    pid: int = 0
    state: WorkerState = WorkerState.BOOTING
    asked: bool = False  # the master asked it to leave: its exit is not a crash
    ready_at: float | None = None  # None: never ready
    heartbeat_at: float = 0.0
    kill_at: float = 0.0  # STOPPING and HUNG: when SIGKILL follows
    retire_at: float | None = None  # READY with recycling on: when it is replaced
    failure: str = ""  # why the master killed it (boot timeout, hung, bad frame)
    cause: str = ""  # the same, or why it was asked to leave, as a metric label (``Cause``)
    error: str = ""  # what the worker said when it could not start (a traceback)
    requests: int = 0  # served, as its reports say (``status.requests``): refork counts them
    promoted: bool = False  # asked to fork a template once (``_refork.py``): never again

    @property
    def live(self) -> bool:
        """Counts towards the broker's capacity: not asked to leave."""
        return not self.asked


def due(w: WorkerRecord, p: BrokerPolicy) -> tuple[float, Expiry] | None:
    """The worker's next deadline and what it means, or None. The supervisor's timer handler
    and ``next_deadline`` both read this, so they cannot disagree."""
    match w.state:
        case WorkerState.BOOTING:
            return w.started + p.boot_timeout, Expiry.BOOT_TIMEOUT  # always > 0 (config.py)
        case WorkerState.READY:
            times = []
            if p.timeout:
                times.append((w.heartbeat_at + p.timeout, Expiry.HUNG))
            if w.retire_at is not None:
                times.append((w.retire_at, Expiry.RECYCLE))
            return min(times, key=lambda t: t[0], default=None)
        case WorkerState.STOPPING | WorkerState.HUNG:
            return w.kill_at, Expiry.KILL
        case WorkerState.KILLED:
            return None
        case _:
            assert_never(w.state)


class Cause:
    """Why a worker left, as the ``cause`` of ``WorkerExit`` and the label of the exit and
    crash counters: few values, so a metric keeps few series."""

    REPLACED = "replaced"  # a reload, a recycle, a retire: a new worker took its place
    DRAIN = "drain"
    SCALE_DOWN = "scale_down"
    STOP = "stop"
    GRACEFUL_TIMEOUT = "graceful_timeout"  # asked to leave, did not in time: killed
    BOOT_TIMEOUT = "boot_timeout"
    HUNG = "hung"
    BAD_FRAME = "bad_frame"
    START_FAILED = "start_failed"  # init() or the import raised
    SIGNAL = "signal"  # killed by someone else (the OOM killer, an operator)
    EXIT = "exit"  # exited on its own


@dataclass(slots=True)
class BrokerRecord:
    policy: BrokerPolicy
    desired: int
    generation: int = 1
    draining: bool = False
    failures: int = 0
    not_before: float = 0.0
    ever_ready: bool = False  # until then, a failure to start stops the master (exit 3)
    last_error: str = ""  # the last start error printed, so the same one is printed once
    tokens: float = float("inf")  # replacements of killed workers allowed now (a bucket)
    tokens_at: float = 0.0
    started: int = 0  # workers spawned
    restarts: int = 0  # of which in place of one that left (a reload, a recycle, a crash)
    crashes: int = 0  # exits nobody asked for
    owed: int = 0  # crashed workers whose replacement has not been spawned yet
    serving: int = 1  # the generation of the last reload done: crash replacements' code
    reforks: int = 0  # reloads done onto a template a worker forked (``_refork.py``)
    last_refork: float | None = None  # when the latest of them was done
    refork_step: int = 0  # which count of ``policy.refork_after`` applies (a reload resets)
    rolling: Rolling = field(init=False)  # its rolling replacement (reloads, recycling)
    templates: Templates = field(init=False)  # with ``policy.template``: one per generation

    def __post_init__(self) -> None:
        self.rolling = Rolling(self.policy.name)
        self.templates = Templates(self.policy.name)

    @property
    def spawn_generation(self) -> int:
        """The generation a new worker belongs to: the newest, except with templates when no
        reload runs: then the serving one, whose template holds the code that last booted (a
        crash after a rolled-back reload comes back on the old code, not the broken)."""
        if self.policy.template and not self.rolling.reloading:
            return self.serving
        return self.generation

    @property
    def templates_wanted(self) -> set[int]:
        """The generations that need a template: the serving one, and the one a reload rolls
        onto (none without templates, nor while draining: a drained master holds nothing but
        its sockets, and a resume starts a template from the code on disk, as workers without
        templates import it)."""
        if not self.policy.template or self.draining:
            return set()
        return {self.serving, self.generation} if self.rolling.reloading else {self.serving}

    def may_spawn(self) -> bool:
        """Whether a worker of ``spawn_generation`` can start now, as far as its template
        goes: always without templates, else once the template is ready (or was not used)."""
        return not self.policy.template or self.templates.spawnable(self.spawn_generation)

    @property
    def turned_away(self) -> bool:
        """Whether the master answers the broker's connections itself: it drains, or is
        scaled to 0 (no worker will take them: they must not wait in the queue)."""
        return self.draining or self.desired == 0

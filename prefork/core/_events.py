"""What the supervisor is told (events, past tense) and what it asks for (actions, verbs).

Pure data: the master loop turns the outside world into events and performs the actions.
The time travels beside an event, not in it (``Supervisor.handle(event, now)``), so tests
choose the clock and nobody stamps an event after it was made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """The master is up: its sockets are bound; workers may be spawned."""


@dataclass(frozen=True, slots=True)
class WorkerSpawned:
    worker_id: int
    pid: int


@dataclass(frozen=True, slots=True)
class SpawnFailed:
    """A worker could not be started. ``backoff``: whether it counts as an early failure (not
    when its template died under it: that is the template's failure, told on its own)."""

    worker_id: int
    reason: str
    backoff: bool = True


@dataclass(frozen=True, slots=True)
class WorkerExited:
    """A worker was reaped. ``exit_code`` is None when it died of ``signal``."""

    worker_id: int
    exit_code: int | None
    signal: int | None


@dataclass(frozen=True, slots=True)
class MessageReceived:
    worker_id: int
    kind: str
    body: Any


@dataclass(frozen=True, slots=True)
class ChannelBroken:
    """A worker sent a frame the master refuses (oversized, not JSON): it gets replaced."""

    worker_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ReloadRequested:
    broker: str | None = None


@dataclass(frozen=True, slots=True)
class DrainRequested:
    broker: str | None = None


@dataclass(frozen=True, slots=True)
class ResumeRequested:
    broker: str | None = None


@dataclass(frozen=True, slots=True)
class ScaleRequested:
    """Set a broker's desired count to ``workers``, or change it by ``delta``."""

    broker: str | None = None
    workers: int | None = None
    delta: int = 0


@dataclass(frozen=True, slots=True)
class StopRequested:
    """SIGINT/SIGQUIT: drain every broker, then exit; a second one kills at once. ``delayed``:
    a SIGTERM that stops (``--sigterm stop``/``auto``): the shutdown delay comes first."""

    delayed: bool = False


@dataclass(frozen=True, slots=True)
class TimePassed:
    """The nearest deadline the supervisor gave has come. ``overslept``: how long after it
    the master woke (a master stopped by SIGSTOP, a debugger or a paused VM wakes late)."""

    overslept: float = 0.0


@dataclass(frozen=True, slots=True)
class MemoryMeasured:
    """The resident memory of workers, in bytes, as ``MeasureMemory`` asked."""

    rss: tuple[tuple[int, int], ...]  # (worker id, bytes)


@dataclass(frozen=True, slots=True)
class TemplateReady:
    """The template of ``broker`` for ``generation`` imported the code: workers fork from it.
    ``threads``: the names of the threads its import left running, ``sockets``: how many
    sockets it left open (a fork shares them, and copies no thread: ``--template auto`` then
    does not use it)."""

    broker: str
    generation: int
    threads: tuple[str, ...] = ()
    sockets: int = 0


@dataclass(frozen=True, slots=True)
class TemplateExited:
    """The template of ``broker`` for ``generation`` was reaped (or could not be forked: no
    code, no signal). ``error``: what it said when it could not import (a traceback)."""

    broker: str
    generation: int
    exit_code: int | None
    signal: int | None
    error: str = ""


Event = (
    Started
    | WorkerSpawned
    | SpawnFailed
    | WorkerExited
    | MessageReceived
    | ChannelBroken
    | ReloadRequested
    | DrainRequested
    | ResumeRequested
    | ScaleRequested
    | StopRequested
    | TimePassed
    | MemoryMeasured
    | TemplateReady
    | TemplateExited
)

# --- actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start a worker. ``plain``: the master forks it, though its broker has templates (its
    generation's template was not used: ``--template auto`` found threads or sockets)."""

    worker_id: int
    broker: str
    generation: int
    plain: bool = False


@dataclass(frozen=True, slots=True)
class Terminate:
    """Ask a worker to leave gracefully (a STOP frame, or SIGTERM if its channel is gone).

    ``replaced``: a new worker takes its place (a reload, a recycle), so clients should
    reconnect (WebSockets are closed with 1012, not 1001)."""

    worker_id: int
    replaced: bool = False


@dataclass(frozen=True, slots=True)
class Kill:
    worker_id: int


@dataclass(frozen=True, slots=True)
class DumpStack:
    """Ask a hung worker to print every thread's stack to the log before it is killed."""

    worker_id: int


@dataclass(frozen=True, slots=True)
class Emit:
    """Fire a broker event for the user's callbacks."""

    broker: str
    event: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Log:
    level: int
    message: str


@dataclass(frozen=True, slots=True)
class Exit:
    code: int


@dataclass(frozen=True, slots=True)
class TurnAway:
    """While ``on``, the master itself accepts the broker's connections and turns them away
    at once (its workers are drained): a client fails over instead of hanging in the backlog,
    and the port stays bound for the resume."""

    broker: str
    on: bool


@dataclass(frozen=True, slots=True)
class Notify:
    """Tell systemd how the service is doing (sd_notify ``KEY=VALUE`` lines)."""

    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MeasureMemory:
    """Read these workers' resident memory and report it as ``MemoryMeasured``."""

    worker_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StartTemplate:
    """Fork the template of ``broker`` for ``generation``: it imports the code on disk once,
    then forks that generation's workers (``Spawn``) until it is stopped."""

    broker: str
    generation: int


@dataclass(frozen=True, slots=True)
class StopTemplate:
    """No worker forks from this template again: close its link (it leaves at the end of
    it), or ``kill`` it (one still importing)."""

    broker: str
    generation: int
    kill: bool = False


@dataclass(frozen=True, slots=True)
class Promote:
    """Ask worker ``worker_id`` to fork the template of ``broker`` for ``generation`` from
    itself (``--refork-after``): its answer is a ``promoted`` message."""

    worker_id: int
    broker: str
    generation: int


Action = (
    Spawn
    | Terminate
    | Kill
    | DumpStack
    | Emit
    | Log
    | Exit
    | Notify
    | TurnAway
    | MeasureMemory
    | StartTemplate
    | StopTemplate
    | Promote
)

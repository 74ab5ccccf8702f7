"""What the supervisor is told (events, past tense) and what it asks for (actions, verbs).

Pure data: the master loop turns the outside world into events and performs the actions.
Time is always passed in as ``now`` (monotonic seconds), so tests choose the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    now: float


@dataclass(frozen=True, slots=True)
class WorkerSpawned:
    worker_id: int
    pid: int
    now: float


@dataclass(frozen=True, slots=True)
class SpawnFailed:
    worker_id: int
    reason: str
    now: float


@dataclass(frozen=True, slots=True)
class WorkerExited:
    """A worker was reaped. ``exit_code`` is None when it died of ``signal``."""

    worker_id: int
    exit_code: int | None
    signal: int | None
    now: float


@dataclass(frozen=True, slots=True)
class MessageReceived:
    worker_id: int
    kind: str
    body: Any
    now: float


@dataclass(frozen=True, slots=True)
class ChannelBroken:
    """A worker sent a frame the master refuses (oversized, not JSON): it gets replaced."""

    worker_id: int
    reason: str
    now: float


@dataclass(frozen=True, slots=True)
class ReloadRequested:
    now: float
    broker: str | None = None


@dataclass(frozen=True, slots=True)
class DrainRequested:
    now: float
    broker: str | None = None


@dataclass(frozen=True, slots=True)
class ResumeRequested:
    now: float
    broker: str | None = None


@dataclass(frozen=True, slots=True)
class ScaleRequested:
    """Set a broker's desired count to ``workers``, or change it by ``delta``."""

    now: float
    broker: str | None = None
    workers: int | None = None
    delta: int = 0


@dataclass(frozen=True, slots=True)
class StopRequested:
    now: float


@dataclass(frozen=True, slots=True)
class TimePassed:
    """The nearest deadline the supervisor gave has come."""

    now: float


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
)

# --- actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spawn:
    worker_id: int
    broker: str
    generation: int


@dataclass(frozen=True, slots=True)
class Terminate:
    """Ask a worker to leave gracefully (SIGTERM)."""

    worker_id: int


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
class Notify:
    """Tell systemd how the service is doing (sd_notify ``KEY=VALUE`` lines)."""

    fields: tuple[str, ...]


Action = Spawn | Terminate | Kill | DumpStack | Emit | Log | Exit | Notify

# --- payloads of broker events ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker, as callbacks see it."""

    id: int
    pid: int
    type: str
    generation: int


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """A worker that left. ``code`` is None when it died of ``signal``; ``uptime`` in seconds."""

    id: int
    pid: int
    type: str
    generation: int
    code: int | None
    signal: int | None
    uptime: float


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """Payload of ``reload_done`` and ``reload_failed`` (``reason`` is empty when done)."""

    type: str
    generation: int
    replaced: int
    reason: str = ""

"""What the supervisor remembers: the policy of each broker and a record per worker.

Plain data, no decisions: those are all in ``_supervisor.py``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BrokerPolicy:
    """What the supervisor needs to know of one broker. Times in seconds; 0 turns one off."""

    name: str
    workers: int = 1
    recycle_rate: float = 0.0
    timeout: float = 30.0
    boot_timeout: float = 60.0
    graceful_timeout: float = 30.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    backoff_reset: float = 10.0
    recycle_jitter: float = 0.1

    @property
    def heartbeat_interval(self) -> float:
        """How often a worker beats: three times per ``timeout`` (two beats may be late before
        the master acts), never when timeouts are off. Each beat wakes the master."""
        return self.timeout / 3 if self.timeout else 0.0


class WorkerState(enum.Enum):
    BOOTING = "booting"
    READY = "ready"


@dataclass(slots=True)
class WorkerRecord:
    id: int
    broker: str
    generation: int
    started: float
    pid: int = 0
    state: WorkerState = WorkerState.BOOTING
    ready_at: float = 0.0
    heartbeat_at: float = 0.0
    stop_requested: bool = False
    kill_at: float | None = None  # SIGKILL at this time unless it left
    killed: bool = False
    retire_at: float | None = None
    failure: str = ""  # why the master killed it (boot timeout, hung, bad frame)


@dataclass(slots=True)
class Swap:
    old: int | None
    new: int


@dataclass(slots=True)
class BrokerRecord:
    policy: BrokerPolicy
    desired: int
    generation: int = 1
    draining: bool = False
    failures: int = 0
    not_before: float = 0.0
    queue: list[int] = field(default_factory=list)
    swap: Swap | None = None
    reloading: bool = False
    replaced: int = 0

"""What the API hands out: the names of the broker events, their payloads, and the status
of a broker and its workers. Plain data: the supervisor makes them, callbacks and ``prefork
ctl`` read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

EVENTS = (
    "worker_exit",
    "worker_crash",
    "worker_ready",
    "worker_message",
    "worker_report",
    "reload_done",
    "reload_failed",
)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker, as callbacks see it."""

    id: int
    pid: int
    type: str
    generation: int


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """A worker that left. ``code`` is None when it died of ``signal``; ``uptime`` in seconds.
    ``cause``: why, in a word (``replaced``, ``drain``, ``scale_down``, ``stop``,
    ``graceful_timeout`` for a ``worker_exit``; ``exit``, ``signal``, ``start_failed``,
    ``boot_timeout``, ``hung``, ``bad_frame`` for a ``worker_crash``)."""

    id: int
    pid: int
    type: str
    generation: int
    code: int | None
    signal: int | None
    uptime: float
    cause: str = ""


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """Payload of ``reload_done`` and ``reload_failed`` (``reason`` is empty when done);
    ``duration`` in seconds."""

    type: str
    generation: int
    replaced: int
    reason: str = ""
    duration: float = 0.0


class WorkerStatus(TypedDict):
    """One worker in ``BrokerStatus``. ``requests`` and ``connections`` are what the worker
    last reported (None if it never did: only workers that report them, as the HTTP worker
    does); ``rss`` its resident memory in bytes (None if unknown); times in seconds."""

    id: int
    pid: int
    generation: int
    state: str  # booting, ready, stopping, hung, killed
    uptime: float
    requests: int | None
    connections: int | None
    rss: int | None


class ReloadStatus(TypedDict):
    """The latest reload of a broker: ``result`` is running, done or failed (with ``reason``);
    ``duration`` (so far, while running) and ``ago`` (since it started) in seconds."""

    generation: int
    result: str
    reason: str
    replaced: int
    duration: float
    ago: float


class TemplateStatus(TypedDict):
    """A template of a broker (``--template``): its generation, ``state`` (starting, ready,
    stopping, or unused: its import left threads or sockets open, ``--template auto``), its
    ``pid`` (None until the master knows it), how long it has run, the pid of the ``standby``
    worker it forked ahead of time (None: none now), and the worker it was ``promoted_from``
    (a refork; None: imported from disk)."""

    generation: int
    state: str
    pid: int | None
    uptime: float
    standby: int | None
    promoted_from: int | None


class ReforkStatus(TypedDict):
    """A broker's reforks (``--refork-after``): how many were done, how long ago the latest
    was (None: none yet), and the requests after which a worker forks the next template
    (None: none left in the list, or no ``--refork-after``)."""

    count: int
    ago: float | None
    next_after: int | None


class BrokerStatus(TypedDict):
    """A broker as the supervisor sees it (``Broker.status``)."""

    desired: int
    live: int
    generation: int
    draining: bool
    reloading: bool
    failures: int  # early failures in a row (crash-loop backoff)
    backoff_until: float  # monotonic time before which nothing is spawned; 0 when none
    backoff: float  # seconds left before the next start may happen (0.0: none)
    started: int  # workers started
    restarts: int  # of which in place of one that left (a reload, a recycle, a crash)
    crashes: int  # exits the master did not ask for
    last_reload: ReloadStatus | None
    workers: list[WorkerStatus]
    templates: list[TemplateStatus]  # by generation; empty without --template
    reforks: ReforkStatus

"""Broker: one worker type inside a master, as the user's code sees it, and the payloads of
the events it fires.

A broker talks to its master through ``MasterDesk`` alone: it posts commands (supervisor
events) and reads status. It never reaches into the master, and the master never rewrites it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from prefork.config import BrokerConfig
from prefork.core._events import (
    DrainRequested,
    Event,
    ReloadRequested,
    ResumeRequested,
    ScaleRequested,
)
from prefork.core._options import ConfigError, shown
from prefork.core._roster import MAX_WORKERS

EVENTS = (
    "worker_exit",
    "worker_crash",
    "worker_ready",
    "worker_message",
    "worker_report",
    "reload_done",
    "reload_failed",
)
log = logging.getLogger("prefork.master")


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


# --- the broker -----------------------------------------------------------------------------


class MasterDesk(Protocol):
    """What a broker may ask of its master."""

    def post(self, event: Event) -> None:
        """Queue a command; it takes effect when the current callback returns."""

    def status(self, broker: str) -> BrokerStatus:
        """The supervisor's view of one broker (``Supervisor.status``)."""

    def send(self, broker: str, obj: Any) -> None:
        """Send ``obj`` to every live worker of ``broker``."""


class Broker:
    """A worker type: its desired count, sockets, callbacks. Made by ``Master.broker()``."""

    def __init__(self, config: BrokerConfig, desk: MasterDesk) -> None:
        self.config = config
        self._desk = desk
        self._callbacks: dict[str, list[Callable[..., Any]]] = {name: [] for name in EVENTS}

    @property
    def type(self) -> str:
        return self.config.type

    @property
    def workers(self) -> int:
        """The desired number of workers (changed by ``scale`` and SIGTTIN/SIGTTOU)."""
        return self.status["desired"]

    @property
    def recycle_rate(self) -> float:
        return self.config.recycle_rate

    @property
    def draining(self) -> bool:
        return self.status["draining"]

    @property
    def status(self) -> BrokerStatus:
        """Desired and live counts, generation, draining/reloading, crash-loop backoff."""
        return self._desk.status(self.type)

    def on(self, event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Call ``fn`` on ``event``; returns ``fn``. Raises ``ValueError`` for an unknown event."""
        if event not in self._callbacks:
            raise ValueError(f"unknown event {event!r}; known events: {', '.join(EVENTS)}")
        self._callbacks[event].append(fn)
        return fn

    def reload(self) -> None:
        """Replace every worker, one at a time, each only after its replacement is ready."""
        self._desk.post(ReloadRequested(self.type))

    def drain(self) -> None:
        """Stop every worker gracefully and start none; the sockets stay bound."""
        self._desk.post(DrainRequested(self.type))

    def resume(self) -> None:
        """Start workers again after ``drain``."""
        self._desk.post(ResumeRequested(self.type))

    def scale(self, n: int) -> None:
        """Set the desired number of workers. Raises ``ConfigError`` if ``n`` is not a whole
        number from 0 to ``MAX_WORKERS`` (1024)."""
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_WORKERS:
            raise ConfigError(f"scale takes a whole number from 0 to {MAX_WORKERS}, got {shown(n)}")
        self._desk.post(ScaleRequested(self.type, workers=n))

    def send(self, obj: Any) -> None:
        """Send a JSON-serialisable object to each live worker (``Worker.on_message``)."""
        self._desk.send(self.type, obj)

    def emit(self, event: str, args: tuple[Any, ...]) -> None:
        """Call the callbacks of ``event`` (the master does, for the supervisor's ``Emit``)."""
        for fn in self._callbacks[event]:
            try:
                fn(*args)
            except Exception:
                # A user's callback must never take the master (and its workers) down.
                log.exception("[%s] %s callback %r raised", self.type, event, fn)

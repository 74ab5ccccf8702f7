"""Broker: one worker type inside a master, as the user's code sees it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prefork._events import (
    DrainRequested,
    Event,
    ReloadRequested,
    ResumeRequested,
    ScaleRequested,
)
from prefork.config import BrokerConfig, ConfigError

if TYPE_CHECKING:
    from prefork._master import Master

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


class Broker:
    """A worker type: its desired count, sockets, callbacks. Made by ``Master.broker()``."""

    def __init__(self, master: Master, config: BrokerConfig) -> None:
        self._master = master
        self.config = config
        self._callbacks: dict[str, list[Callable[..., Any]]] = {name: [] for name in EVENTS}

    @property
    def type(self) -> str:
        return self.config.type

    @property
    def workers(self) -> int:
        """The desired number of workers (changed by ``scale`` and SIGTTIN/SIGTTOU)."""
        return self._master._desired(self)

    @property
    def recycle_rate(self) -> float:
        return self.config.recycle_rate

    @property
    def draining(self) -> bool:
        return self._master._draining(self)

    @property
    def status(self) -> dict[str, object]:
        """Desired and live counts, generation, draining/reloading, crash-loop backoff."""
        return self._master._status(self)

    def on(self, event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Call ``fn`` on ``event``; returns ``fn``. Raises ``ValueError`` for an unknown event."""
        if event not in self._callbacks:
            raise ValueError(f"unknown event {event!r}; known events: {', '.join(EVENTS)}")
        self._callbacks[event].append(fn)
        return fn

    def reload(self) -> None:
        """Replace every worker, one at a time, each only after its replacement is ready."""
        self._post(ReloadRequested(0.0, self.type))

    def drain(self) -> None:
        """Stop every worker gracefully and start none; the sockets stay bound."""
        self._post(DrainRequested(0.0, self.type))

    def resume(self) -> None:
        """Start workers again after ``drain``."""
        self._post(ResumeRequested(0.0, self.type))

    def scale(self, n: int) -> None:
        """Set the desired number of workers. Raises ``ConfigError`` if ``n`` is not >= 0."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"scale takes a whole number >= 0, got {n!r}")
        self._post(ScaleRequested(0.0, self.type, workers=n))

    def send(self, obj: Any) -> None:
        """Send a JSON-serialisable object to each live worker (``Worker.on_message``)."""
        self._master._send(self, obj)

    def _post(self, event: Event) -> None:
        self._master._post(event)

    def _emit(self, event: str, args: tuple[Any, ...]) -> None:
        for fn in self._callbacks[event]:
            try:
                fn(*args)
            except Exception:
                # A user's callback must never take the master (and its workers) down.
                log.exception("[%s] %s callback %r raised", self.type, event, fn)

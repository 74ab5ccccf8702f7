"""Broker: one worker type inside a master, as the user's code sees it (the payloads of the
events it fires are ``core/_payloads.py``).

A broker talks to its master through ``MasterDesk`` alone: it posts commands (supervisor
events) and reads status. It never reaches into the master, and the master never rewrites it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from prefork.config import BrokerConfig
from prefork.core._events import (
    DrainRequested,
    Event,
    ReloadRequested,
    ResumeRequested,
    ScaleRequested,
)
from prefork.core._options import ConfigError, shown
from prefork.core._payloads import EVENTS, BrokerStatus
from prefork.core._roster import MAX_WORKERS

log = logging.getLogger("prefork.master")


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


class Desk:
    """The master's ``MasterDesk``: what a ``Broker`` may ask of it, and nothing more."""

    def __init__(
        self,
        post: Callable[[Event], None],
        status: Callable[[], dict[str, BrokerStatus]],
        send: Callable[[str, Any], None],
    ) -> None:
        self.post = post
        self._status = status
        self.send = send

    def status(self, broker: str) -> BrokerStatus:
        return self._status()[broker]

"""What the connections of one worker share: the app, config, request counters, the deadline
sweep (one timer per worker instead of one per request) and the drain.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prefork.http._asgi import ASGIApp
from prefork.http._config import HTTPConfig

if TYPE_CHECKING:
    from prefork.http._connection import HTTPProtocol


class ServerState:
    """What the connections of one worker share: the app, config, counters, drain state."""

    def __init__(
        self,
        config: HTTPConfig,
        app: ASGIApp,
        loop: asyncio.AbstractEventLoop,
        *,
        retire: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.app = app
        self.loop = loop
        self.retire = retire
        self.connections: set[HTTPProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.lifespan_state: dict[str, Any] = {}
        self.inflight = 0
        self.requests = 0
        self.max_requests = 0
        if config.max_requests:
            self.max_requests = config.max_requests + random.randint(0, config.max_requests_jitter)
        self.draining = False
        self._trust: dict[str | None, bool] = {}
        self._idle: asyncio.Future[None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.sweep_interval = min(
            1.0, config.keep_alive / 4, config.header_timeout / 4, config.body_timeout / 4
        )

    def trusts(self, host: str | None) -> bool:
        """Whether proxy headers from ``host`` are believed (cached per host)."""
        trusted = self._trust.get(host)
        if trusted is None:
            trusted = self._trust[host] = self.config.trusts(host)
        return trusted

    def request_started(self) -> None:
        self.requests += 1
        if self.requests == self.max_requests and self.retire is not None:
            self.retire()

    # -- timeouts --------------------------------------------------------------------------

    def start_sweeping(self) -> None:
        """Check every connection's deadline every ``sweep_interval`` seconds."""
        self._sweeper = self.loop.call_later(self.sweep_interval, self._tick)

    def stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _tick(self) -> None:
        self.sweep(self.loop.time())
        self.start_sweeping()

    def sweep(self, now: float) -> None:
        for conn in list(self.connections):
            conn.check_deadline(now)

    # -- drain -----------------------------------------------------------------------------

    async def drain(self) -> None:
        """Close idle connections, let busy ones finish (then close), wait for all to go."""
        self.draining = True
        for conn in list(self.connections):
            conn.start_drain()
        if self.connections:
            self._idle = self.loop.create_future()
            await self._idle

    def connection_closed(self, conn: HTTPProtocol) -> None:
        self.connections.discard(conn)
        if not self.connections and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

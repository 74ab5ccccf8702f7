"""ASGI lifespan (spec 2.0): one per worker, startup before accepting, shutdown after drain.

Modes: ``on`` (the app must support it), ``auto`` (an app that raises on the lifespan scope
is served without it), ``off``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prefork.http._asgi import ASGIApp, Message

logger = logging.getLogger("prefork.http")


class LifespanFailure(RuntimeError):
    """Lifespan startup failed: the worker must not serve (a boot failure)."""


class Lifespan:
    """Runs the app's lifespan scope in a task and talks to it through two messages."""

    def __init__(self, app: ASGIApp, mode: str, state: dict[str, Any]) -> None:
        self.app = app
        self.mode = mode
        self.state = state
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._startup: asyncio.Future[str | None] | None = None
        self._shutdown: asyncio.Future[str | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsupported = False

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer.

        Raises ``LifespanFailure`` on ``lifespan.startup.failed``, or when the app raises in
        ``on`` mode.
        """
        if self.mode == "off":
            return
        loop = asyncio.get_running_loop()
        self._startup = loop.create_future()
        self._task = loop.create_task(self._main())
        await self._queue.put({"type": "lifespan.startup"})
        failure = await self._startup
        if failure is not None:
            raise LifespanFailure(f"application startup failed: {failure}")

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the answer (failures are only logged)."""
        if self._task is None or self._unsupported or self._task.done():
            return
        self._shutdown = asyncio.get_running_loop().create_future()
        await self._queue.put({"type": "lifespan.shutdown"})
        failure = await self._shutdown
        if failure is not None:
            logger.error("Application shutdown failed: %s", failure)

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if self._startup is not None and not self._startup.done():
                if self.mode == "auto":
                    self._unsupported = True
                    logger.info("ASGI 'lifespan' protocol appears unsupported.")
                    self._startup.set_result(None)
                else:
                    logger.error("Exception in 'lifespan' protocol", exc_info=exc)
                    self._startup.set_result(repr(exc))
            else:
                logger.error("Exception in 'lifespan' protocol", exc_info=exc)
                self._settle(self._shutdown, repr(exc))
            if not isinstance(exc, Exception):
                raise
        else:
            if self._startup is not None and not self._startup.done():
                # returning at once is how many plain apps say "no lifespan here"
                self._unsupported = True
                self._startup.set_result(None)
            self._settle(self._shutdown, None)

    @staticmethod
    def _settle(fut: asyncio.Future[str | None] | None, value: str | None) -> None:
        if fut is not None and not fut.done():
            fut.set_result(value)

    async def _receive(self) -> Message:
        return await self._queue.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._settle(self._startup, None)
        elif kind == "lifespan.startup.failed":
            self._settle(self._startup, message.get("message", "") or "(no message)")
        elif kind == "lifespan.shutdown.complete":
            self._settle(self._shutdown, None)
        elif kind == "lifespan.shutdown.failed":
            self._settle(self._shutdown, message.get("message", "") or "(no message)")
        else:
            raise RuntimeError(f"Unexpected ASGI lifespan message type {kind!r}.")

"""ASGI lifespan: on/off/auto, failures, state."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from _http_fakes import run

from prefork.http import LifespanFailure
from prefork.http._lifespan import Lifespan


def lifespan_app(
    startup: str = "complete", shutdown: str = "complete", log: list[str] | None = None
) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan" and scope["asgi"]["version"] == "3.0"
        message = await receive()
        assert message["type"] == "lifespan.startup"
        scope["state"]["ready"] = True
        if startup == "raise":
            raise RuntimeError("cannot start")
        await send({"type": f"lifespan.startup.{startup}", "message": "no db"})
        if startup == "failed":
            return
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        if log is not None:
            log.append("shutdown")
        if shutdown == "raise":
            raise RuntimeError("cannot stop")
        await send({"type": f"lifespan.shutdown.{shutdown}"})

    return app


def test_startup_and_shutdown_complete() -> None:
    async def main() -> None:
        log: list[str] = []
        state: dict[str, Any] = {}
        ls = Lifespan(lifespan_app(log=log), "on", state)
        await ls.startup()
        assert state == {"ready": True}
        await ls.shutdown()
        assert log == ["shutdown"]

    run(main())


def test_startup_failed_raises_in_every_mode() -> None:
    async def main() -> None:
        for mode in ("on", "auto"):
            with pytest.raises(LifespanFailure, match="no db"):
                await Lifespan(lifespan_app(startup="failed"), mode, {}).startup()

    run(main())


def test_app_that_raises_is_unsupported_in_auto_and_fatal_when_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="prefork.http")

    async def main() -> None:
        ls = Lifespan(lifespan_app(startup="raise"), "auto", {})
        await ls.startup()
        await ls.shutdown()  # nothing to do
        assert "appears unsupported" in caplog.text
        with pytest.raises(LifespanFailure, match="cannot start"):
            await Lifespan(lifespan_app(startup="raise"), "on", {}).startup()

    run(main())


def test_shutdown_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ls = Lifespan(lifespan_app(shutdown="failed"), "on", {})
        await ls.startup()
        await ls.shutdown()
        ls = Lifespan(lifespan_app(shutdown="raise"), "on", {})
        await ls.startup()
        await ls.shutdown()

    run(main())
    assert "Application shutdown failed: (no message)" in caplog.text
    assert "cannot stop" in caplog.text


def test_off_and_plain_apps() -> None:
    async def main() -> None:
        called: list[str] = []

        async def never(scope: dict[str, Any], receive: Any, send: Any) -> None:
            called.append("never")

        async def plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
            called.append(scope["type"])  # returns at once: "no lifespan here"

        ls = Lifespan(never, "off", {})
        await ls.startup()
        await ls.shutdown()
        assert called == []
        ls = Lifespan(plain, "on", {})
        await ls.startup()
        await asyncio.wait_for(ls.shutdown(), 1)  # sends nothing: nobody would answer
        assert called == ["lifespan"] and ls._queue.qsize() == 1  # only the startup message

    run(main())


def test_app_that_returns_after_startup_needs_no_shutdown() -> None:
    received: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        received.append((await receive())["type"])
        await send({"type": "lifespan.startup.complete"})

    async def main() -> None:
        ls = Lifespan(app, "on", {})
        await ls.startup()
        await asyncio.sleep(0)
        await asyncio.wait_for(ls.shutdown(), 1)  # the app is gone: nothing to wait for
        assert received == ["lifespan.startup"] and ls._queue.empty()

    run(main())


def test_unknown_message_and_cancellation(caplog: pytest.LogCaptureFixture) -> None:
    async def bad(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.nonsense"})

    async def main() -> None:
        with pytest.raises(LifespanFailure, match="nonsense"):
            await Lifespan(bad, "on", {}).startup()

        async def hang(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await asyncio.Event().wait()

        ls = Lifespan(hang, "on", {})
        await ls.startup()
        assert ls._task is not None
        ls._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ls._task

    run(main())

"""A small ASGI app for the `prefork serve` process tests, steered by environment variables.

- ``SERVE_APP_SPAWNS``: a file; every import appends the importing pid (counts boot attempts).
- ``SERVE_APP_BREAK_IMPORT``: a flag file; while it exists, importing this module raises.
- ``SERVE_APP_BREAK_LIFESPAN``: a flag file; while it exists, lifespan startup fails.
- ``SERVE_APP_EVENTS``: a file; a ``/slow`` request appends ``start <pid>`` when it begins.

Routes: ``/`` answers the worker's pid; ``/slow?t=SECONDS`` sleeps, then answers
``slow <pid>``; ``/orphan?until=PATH`` leaves an orphan behind (a grandchild whose parent
left at once: the master's to reap) that exits once PATH exists (10 s at most).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any
from urllib.parse import parse_qs


def _flag(name: str) -> bool:
    path = os.environ.get(name)
    return bool(path) and os.path.exists(path)


def _append(name: str, line: str) -> None:
    path = os.environ.get(name)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


_append("SERVE_APP_SPAWNS", str(os.getpid()))
if _flag("SERVE_APP_BREAK_IMPORT"):
    raise RuntimeError("serving: broken on purpose at import")


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if _flag("SERVE_APP_BREAK_LIFESPAN"):
                failed = {"type": "lifespan.startup.failed", "message": "serving: lifespan broken"}
                await send(failed)
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    body = str(os.getpid()).encode()
    if scope["path"] == "/slow":
        _append("SERVE_APP_EVENTS", f"start {os.getpid()}")
        query = parse_qs(scope["query_string"].decode())
        await asyncio.sleep(float(query.get("t", ["1"])[0]))
        body = b"slow " + body
    if scope["path"] == "/orphan":
        _orphan(parse_qs(scope["query_string"].decode())["until"][0])
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _orphan(until: str) -> None:
    """Fork a child that forks a grandchild and leaves at once: the grandchild, reparented to
    the master (a subreaper, or PID 1), exits once ``until`` exists; the master must reap it."""
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            deadline = time.monotonic() + 10
            while not os.path.exists(until) and time.monotonic() < deadline:
                time.sleep(0.01)
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)  # the worker reaps its own child; the grandchild is the master's


def create_app() -> Any:
    """For ``--factory serving:create_app``."""
    return app

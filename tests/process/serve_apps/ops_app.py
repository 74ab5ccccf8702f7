"""An ASGI app for the `prefork ctl` and metrics process tests, steered by files.

- ``OPS_BOOT_GATE``: a file; while it exists, lifespan startup waits (a reload then stays
  running until the test removes it, however busy the machine).
- ``OPS_BOOT_DELAY``: a file; while it exists, lifespan startup sleeps the seconds in it
  (a reload then takes a while: time to look at it).
- ``OPS_BROKEN``: a flag file; while it exists, importing this module raises.

Routes: ``/`` answers the worker's pid; ``/grow?mb=N`` keeps N more MiB alive in the worker.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import parse_qs


def _path(name: str) -> str | None:
    path = os.environ.get(name)
    return path if path and os.path.exists(path) else None


if _path("OPS_BROKEN"):
    raise RuntimeError("ops_app: broken on purpose at import")

_kept: list[bytearray] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                while _path("OPS_BOOT_GATE"):
                    await asyncio.sleep(0.01)
                delay = _path("OPS_BOOT_DELAY")
                if delay:
                    with open(delay) as f:
                        await asyncio.sleep(float(f.read()))
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/grow":
        mb = int(parse_qs(scope["query_string"].decode())["mb"][0])
        _kept.append(bytearray(b"\1" * (mb << 20)))
    body = str(os.getpid()).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})

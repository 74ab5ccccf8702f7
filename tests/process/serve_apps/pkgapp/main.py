"""``pkgapp.main:app`` answers ``<VERSION> <pid that imported pkgapp> <worker pid>``."""

from __future__ import annotations

import os
from typing import Any

import pkgapp


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = f"{pkgapp.VERSION} {pkgapp.IMPORTED_BY} {os.getpid()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})

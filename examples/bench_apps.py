"""The apps benchmarks/http_speed.py and benchmarks/publish.py measure, as one raw ASGI 3 app
(no framework), so that every server serves the same code.

    prefork serve examples.bench_apps:app

Routes: ``GET /`` "Hello, world!" (13 bytes of text); ``GET /json`` a JSON document of
exactly 1 KiB, serialized on every request as an API would; ``POST /echo`` reads the whole
request body and sends it back; ``GET /sleep`` awaits 20 ms (``asyncio.sleep``, as an app
awaits a database) and then answers as ``GET /`` does; ``GET /fastapi`` the same hello from a
FastAPI app (what a framework leaves of the server's speed; a 404 without fastapi installed).
Anything else is a 404 (a wrong route measured fast would be a defect, so the benchmark checks
each answer's size first). A WebSocket, on any path, echoes every message as it came.

Lifespan is supported. When BENCH_APPS_READY_DIR is set, each process that completes the
lifespan startup writes an empty file named by its pid there (and removes it at shutdown): the
benchmark polls for one per worker rather than sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HELLO = b"Hello, world!"
JSON_SIZE = 1024
SLEEP = 0.02


def _document() -> dict[str, Any]:
    """What /json serializes: a list of records, padded so that it comes to JSON_SIZE bytes."""
    doc: dict[str, Any] = {
        "items": [
            {"id": i, "name": f"item {i}", "price": i * 1.25, "ok": i % 2 == 0} for i in range(12)
        ],
        "pad": "",
    }
    doc["pad"] = "x" * (JSON_SIZE - len(json.dumps(doc).encode()))
    return doc


DOCUMENT = _document()
assert len(json.dumps(DOCUMENT).encode()) == JSON_SIZE


def _fastapi() -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
    """The FastAPI app of ``GET /fastapi``, made at import (not on the first request)."""
    try:
        from fastapi import FastAPI
        from fastapi.responses import PlainTextResponse
    except ImportError:
        return None
    api = FastAPI()

    @api.get("/fastapi", response_class=PlainTextResponse)
    async def hello() -> str:
        return HELLO.decode()

    return api  # type: ignore[no-any-return]


FASTAPI = _fastapi()


def _start(status: int, content_type: bytes, length: int) -> Message:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", b"%d" % length)],
    }


async def _answer(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    await send(_start(status, content_type, len(body)))
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    ready = os.environ.get("BENCH_APPS_READY_DIR")
    marker = Path(ready, str(os.getpid())) if ready else None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if marker is not None:
                marker.touch()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if marker is not None:
                marker.unlink(missing_ok=True)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _echo_socket(receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await _echo_socket(receive, send)
        return
    path, method = scope["path"], scope["method"]
    if path == "/" and method in ("GET", "HEAD"):
        await _answer(send, 200, b"text/plain; charset=utf-8", HELLO)
    elif path == "/json" and method in ("GET", "HEAD"):
        await _answer(send, 200, b"application/json", json.dumps(DOCUMENT).encode())
    elif path == "/sleep" and method in ("GET", "HEAD"):
        await asyncio.sleep(SLEEP)
        await _answer(send, 200, b"text/plain; charset=utf-8", HELLO)
    elif path == "/fastapi" and FASTAPI is not None:
        await FASTAPI(scope, receive, send)
    elif path == "/echo" and method == "POST":
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        await _answer(send, 200, b"application/octet-stream", b"".join(chunks))
    else:
        await _answer(send, 404, b"text/plain; charset=utf-8", b"Not Found")

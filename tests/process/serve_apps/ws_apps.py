"""An ASGI app for the WebSocket process tests (test_serve_websocket.py).

``WS_APP_EVENTS``: a file; the app appends ``connect <pid> <scheme> <path>`` when a WebSocket
reaches it and ``disconnect <pid> <code>`` for the ``websocket.disconnect`` it receives.

WebSocket paths:

- ``/`` accepts and echoes every message; the text ``whoami`` is answered with
  ``<pid> <scheme>`` instead.
- ``/refuse`` sends ``websocket.close`` before accepting (the client gets a 403).
- ``/deny`` answers the handshake with its own 401 and a body (the denial-response extension).

Any ``http`` request is answered 200 with ``http <method> <path> upgrade=<Upgrade header>``.
"""

from __future__ import annotations

import os
from typing import Any

DENIAL_BODY = b"no entry without a token\n"


def _event(line: str) -> None:
    path = os.environ.get("WS_APP_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(scope: dict[str, Any], send: Any) -> None:
    upgrade = dict(scope["headers"]).get(b"upgrade", b"-")
    body = b"http %s %s upgrade=%s" % (scope["method"].encode(), scope["path"].encode(), upgrade)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    pid = os.getpid()
    message = await receive()
    assert message["type"] == "websocket.connect", message
    _event(f"connect {pid} {scope['scheme']} {scope['path']}")
    if scope["path"] == "/refuse":
        await send({"type": "websocket.close", "code": 1008})
        return
    if scope["path"] == "/deny":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": DENIAL_BODY})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            _event(f"disconnect {pid} {message['code']}")
            return
        text = message.get("text")
        if text == "whoami":
            await send({"type": "websocket.send", "text": f"{pid} {scope['scheme']}"})
        elif text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        await _http(scope, send)
    else:
        await _websocket(scope, receive, send)

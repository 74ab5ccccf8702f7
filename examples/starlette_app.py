"""A Starlette app on prefork: a JSON endpoint and a streaming response.

prefork serve examples.starlette_app:app --workers 2
curl localhost:8000/            -> {"hello":"world"}
curl localhost:8000/count?n=5   -> 0..4, one line each, streamed (chunked)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"length": len(body), "method": request.method})


async def count(request: Request) -> StreamingResponse:
    n = min(int(request.query_params.get("n", "10")), 10_000)

    async def lines() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"{i}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(lines(), media_type="text/plain")


def sync_page(request: Request) -> JSONResponse:
    """A plain def endpoint: Starlette runs it in a thread (anyio needs a current task)."""
    return JSONResponse({"sync": True})


app = Starlette(
    routes=[
        Route("/", hello),
        Route("/echo", echo, methods=["POST"]),
        Route("/count", count),
        Route("/sync", sync_page),
    ]
)

"""A connection is freed by its last reference when it ends, not by the cyclic garbage
collector: with a reference cycle per connection, the collector ran often enough under
``Connection: close`` to take ~11% of a worker's CPU. Real uvloop transports on 127.0.0.1,
in this process (no fork)."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Iterator
from functools import partial

import pytest
import uvloop
from _http_fakes import hello_app

from prefork.http._accept import Acceptor, Share
from prefork.http._config import HTTPConfig
from prefork.http._connection import HTTPProtocol
from prefork.http._state import ServerState


@pytest.fixture
def unreachable() -> Iterator[list[object]]:
    """What the collector finds unreachable (kept, not freed) while the test runs."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def _serve(requests: list[bytes]) -> None:
    loop = asyncio.get_running_loop()
    state = ServerState(HTTPConfig(app="x:app"), hello_app, loop)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    share = Share(None, 0, state.connections)
    acceptor = Acceptor(loop, listener, partial(HTTPProtocol, state), share, tls={})
    acceptor.start()
    port = listener.getsockname()[1]
    for request in requests:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        assert (await reader.readuntil(b"hello")).startswith(b"HTTP/1.1 200 ")
        writer.close()
        await writer.wait_closed()
    while state.connections or state.tasks:
        await asyncio.sleep(0.001)
    acceptor.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",  # the server closes
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # keep-alive: the client closes
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    ],
)
def test_a_connection_that_ended_leaves_nothing_to_the_collector(
    unreachable: list[object], request_bytes: bytes
) -> None:
    uvloop.run(_serve([request_bytes] * 20))
    gc.collect()
    ours = [o for o in unreachable if type(o).__module__.startswith("prefork.")]
    assert ours == []

"""FlowControl alone: pause state of both directions and the writer waiting to drain."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from _http_fakes import FakeTransport, fd_is_open, run

from prefork.http._config import HTTPConfig
from prefork.http._connection import HTTPProtocol
from prefork.http._flow import FlowControl, send_fin
from prefork.http._state import ServerState


def flow_on_fake() -> tuple[FlowControl, FakeTransport]:
    loop = asyncio.get_running_loop()
    transport = FakeTransport(asyncio.Protocol(), loop)
    return FlowControl(transport, loop), transport  # type: ignore[arg-type]


def test_reading_is_paused_and_resumed_once_however_often_asked() -> None:
    async def main() -> None:
        flow, transport = flow_on_fake()
        flow.resume_reading()  # not paused: nothing to do
        flow.pause_reading()
        flow.pause_reading()
        assert flow.read_paused and not transport.reading and transport.pauses == 1
        flow.resume_reading()
        flow.resume_reading()
        assert not flow.read_paused and transport.reading

    run(main())


def test_drain_waits_only_while_writing_is_paused() -> None:
    async def main() -> None:
        flow, _ = flow_on_fake()
        await asyncio.wait_for(flow.drain(), 1)  # not paused: at once
        flow.pause_writing()
        waiting = asyncio.ensure_future(flow.drain())
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()
        flow.resume_writing()
        await asyncio.wait_for(waiting, 1)
        assert not flow.write_paused and flow._waiter is None

    run(main())


def test_close_ends_new_waits_and_lost_releases_the_waiting_writer() -> None:
    async def main() -> None:
        flow, _ = flow_on_fake()
        flow.pause_writing()
        waiting = asyncio.ensure_future(flow.drain())
        await asyncio.sleep(0)
        flow.close()  # the transport still flushes: the writer waits for it
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()
        await asyncio.wait_for(flow.drain(), 1)  # but nobody starts waiting now
        flow.lost()
        await asyncio.wait_for(waiting, 1)
        flow.lost()  # twice is harmless
        assert flow.closed

    run(main())


# -- the early FIN ---------------------------------------------------------------------------


def fin_arrived(peer: socket.socket) -> bool:
    """Whether ``peer`` reads end of input now (without waiting)."""
    try:
        return peer.recv(1) == b""
    except BlockingIOError:
        return False


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    yield ours, peer
    ours.close()
    peer.close()


def test_a_close_with_nothing_unsent_sends_the_fin_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The FIN goes out in end() itself, not when the transport gets round to closing (the
    fake's close() closes nothing), and the fd stays the transport's."""
    ours, peer = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport = FakeTransport(asyncio.Protocol(), loop)
        flow = FlowControl(transport, loop, ours.fileno())  # type: ignore[arg-type]
        assert not fin_arrived(peer)
        flow.end(abort=False)
        assert fin_arrived(peer) and transport.closed and fd_is_open(ours.fileno())

    run(main())


@pytest.mark.parametrize("case", ["unsent", "closing", "abort", "no fd"])
def test_no_early_fin(pair: tuple[socket.socket, socket.socket], case: str) -> None:
    """No FIN from end() while the transport still holds bytes (the FIN must follow them:
    the transport sends it once flushed), once it is closing (uvloop may have closed the fd
    and its number be another's), on an abort, or without an fd (TLS)."""
    ours, peer = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport = FakeTransport(asyncio.Protocol(), loop, high_water=1 << 20)
        fd = None if case == "no fd" else ours.fileno()
        flow = FlowControl(transport, loop, fd)  # type: ignore[arg-type]
        if case == "unsent":
            transport.write(b"not read yet")
        elif case == "closing":
            transport.closed = True
        flow.end(abort=case == "abort")
        assert not fin_arrived(peer) and transport.closed

    run(main())


def test_send_fin_on_a_socket_with_no_peer_is_no_error() -> None:
    with socket.socket() as unconnected:
        send_fin(unconnected.fileno())  # ENOTCONN
        assert fd_is_open(unconnected.fileno())


def test_a_connection_close_response_is_followed_by_the_fin_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The protocol hands its fd (from the acceptor) to its flow control: the client of a
    ``Connection: close`` request sees end of input with the response, so that it does not
    close first and keep the TIME_WAIT."""
    ours, peer = pair

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        state = ServerState(HTTPConfig(app=app, lifespan="off"), app, loop)
        proto = HTTPProtocol(state, None, None, ours.fileno())
        transport = FakeTransport(proto, loop)
        transport.hold_close = True  # the fake's close() reports nothing: only the FIN tells
        proto.connection_made(transport)  # type: ignore[arg-type]
        proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        deadline = loop.time() + 5
        while not transport.closed and loop.time() < deadline:
            await asyncio.sleep(0)
        assert transport.out.endswith(b"\r\n\r\nok") and fin_arrived(peer)

    run(main())

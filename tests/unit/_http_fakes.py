"""Test doubles for the HTTP worker: a fake transport, a client that drives HTTPProtocol
directly, a response parser built on h11's client side (an independent check of our
framing), and the small apps several test modules share."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h11

from prefork.http._config import HTTPConfig
from prefork.http._connection import HTTPProtocol
from prefork.http._state import ServerState


class FakeTransport:
    """Records writes; ``close()`` reports connection_lost on the next loop turn, like uvloop.

    With ``hold_close`` set, ``close()`` behaves like uvloop's with unread data buffered for a
    client that stopped reading: it never reports connection_lost; only ``abort()`` does.

    With ``high_water`` set, written bytes stay buffered until ``client_reads()``: past the
    mark the protocol's writing is paused, and resumed once the buffer is down to a quarter.
    ``reset_on_write`` makes the next write fail as on a connection the client reset: the
    transport is closing at once, connection_lost comes a loop turn later, and later writes
    are dropped (counted in ``dropped``), as uvloop does.
    """

    def __init__(
        self,
        protocol: asyncio.Protocol,
        loop: asyncio.AbstractEventLoop,
        *,
        sockname: Any = ("127.0.0.1", 8000),
        peername: Any = ("127.0.0.1", 50000),
        high_water: int | None = None,
    ) -> None:
        self.protocol = protocol
        self.loop = loop
        self.out = bytearray()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.hold_close = False
        self._lost = False
        self.reading = True
        self.pauses = 0
        self.extra = {"sockname": sockname, "peername": peername}
        self.high_water = high_water
        self.buffered = 0
        self.writing_paused = False
        self.reset_on_write = False
        self.broken = False
        self.dropped = 0

    def write(self, data: bytes) -> None:
        if self.reset_on_write and not self.closed:
            self.broken = self.closed = True
            self._report_lost(ConnectionResetError(104, "Connection reset by peer"))
        if self.broken:
            self.dropped += 1
            return
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))
        self.out += data
        if self.high_water is not None:
            self.buffered += len(data)
            if self.buffered > self.high_water and not self.writing_paused:
                self.writing_paused = True
                self.protocol.pause_writing()  # type: ignore[attr-defined]

    def client_reads(self) -> None:
        """The client reads everything buffered (with ``high_water``)."""
        assert self.high_water is not None
        self.buffered = 0
        if self.writing_paused:
            self.writing_paused = False
            self.protocol.resume_writing()  # type: ignore[attr-defined]

    def feed_eof(self) -> None:
        """The client's FIN: like asyncio, close unless ``eof_received()`` keeps us open."""
        if not self.protocol.eof_received():
            self.close()

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def close(self) -> None:
        self.closed = True
        if not self.hold_close:
            self._report_lost()

    def abort(self) -> None:
        self.closed = self.aborted = True
        self._report_lost()

    def _report_lost(self, exc: Exception | None = None) -> None:
        if not self._lost:
            self._lost = True
            self.loop.call_soon(self.protocol.connection_lost, exc)

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return self.buffered  # what the client has not read (with ``high_water``)

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def set_protocol(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.Protocol:
        return self.protocol


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    http_version: bytes = b"1.1"

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def parse_responses(data: bytes, methods: list[str]) -> list[Response]:
    """Parse ``data`` as the responses to requests with ``methods``, using h11 as a client."""
    conn = h11.Connection(h11.CLIENT)
    out: list[Response] = []
    if not data:
        return out
    conn.receive_data(bytes(data))
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
        conn.send(h11.EndOfMessage())
        response: Response | None = None
        while True:
            event = conn.next_event()
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                response = Response(event.status_code, list(event.headers), b"", event.http_version)
            elif isinstance(event, h11.Data):
                assert response is not None
                response.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                out.append(response)
                break
            else:
                return out  # NEED_DATA / ConnectionClosed: no (more) whole responses
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            return out  # the connection closes after this one
    return out


@dataclass
class Harness:
    """One connection of HTTPProtocol on a FakeTransport, on the running loop."""

    app: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)
    sockname: Any = ("127.0.0.1", 8000)
    peername: Any = ("127.0.0.1", 50000)
    high_water: int | None = None

    def __post_init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._offset: float | None = None
        self.config = HTTPConfig(app=self.app, **self.options)
        self.retired = 0
        self.state = ServerState(self.config, self.app, self.loop, retire=self._retire)
        self.proto = self.connect()
        self.transport: FakeTransport = self.proto.transport  # type: ignore[assignment]

    def _retire(self) -> None:
        self.retired += 1

    def connect(self) -> HTTPProtocol:
        proto = HTTPProtocol(self.state)
        transport = FakeTransport(
            proto,
            self.loop,
            sockname=self.sockname,
            peername=self.peername,
            high_water=self.high_water,
        )
        proto.connection_made(transport)  # type: ignore[arg-type]
        return proto

    def feed(self, data: bytes, how: str = "whole", seed: int = 0) -> None:
        for piece in split(data, how, seed):
            if self.transport.closed:
                return
            self.proto.data_received(piece)

    def advance(self, seconds: float) -> None:
        """Move the loop's clock, and the one requests are timed with, ``seconds`` ahead:
        timers due by then run at the next turns (deadlines are only checked by explicit
        sweeps)."""
        if self._offset is None:
            real, clock = self.loop.time, self.state.clock
            self._offset = 0.0
            self.loop.time = lambda: real() + (self._offset or 0.0)  # type: ignore[method-assign]
            self.state.clock = lambda: clock() + (self._offset or 0.0)
        self._offset += seconds

    def eof(self) -> None:
        """The client closes its side (shutdown(SHUT_WR), or close())."""
        self.transport.feed_eof()

    async def until(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        """Let the loop run until ``cond()`` holds (polling with a deadline)."""
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0)

    async def settle_loop(self) -> None:
        """Let every ready callback and task run (a few loop turns)."""
        for _ in range(10):
            await asyncio.sleep(0)

    async def settle(self, turns: int = 10) -> None:
        """Run the loop until no request task has been left for ``turns`` turns in a row (a
        pipelined request starts a turn after the task of the one before has ended)."""
        deadline = time.monotonic() + 5.0
        quiet = 0
        while quiet < turns:
            if time.monotonic() > deadline:
                raise AssertionError("the request tasks did not settle in time")
            quiet = 0 if self.state.tasks else quiet + 1
            await asyncio.sleep(0)

    def responses(self, *methods: str) -> list[Response]:
        return parse_responses(bytes(self.transport.out), list(methods))

    @property
    def out(self) -> bytes:
        return bytes(self.transport.out)


def split(data: bytes, how: str, seed: int = 0) -> Iterator[bytes]:
    """``whole``, ``bytes`` (one at a time) or ``random`` pieces of ``data``."""
    if how == "whole":
        yield data
    elif how == "bytes":
        for i in range(len(data)):
            yield data[i : i + 1]
    else:
        rng = random.Random(seed)
        i = 0
        while i < len(data):
            n = rng.randint(1, 17)
            yield data[i : i + n]
            i += n


SPLITS = ["whole", "bytes", "random"]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


START = {"type": "http.response.start", "status": 200, "headers": []}


async def hello_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
    await send({"type": "http.response.body", "body": b"hello"})


def echo_app(messages: list[dict[str, Any]] | None = None) -> Any:
    """Reads the whole body (recording each message in ``messages``), then echoes it back.

    Returns without answering if ``receive`` gives anything but ``http.request``.
    """

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            if messages is not None:
                messages.append(message)
            if message["type"] != "http.request":
                return
            body += message["body"]
            if not message["more_body"]:
                break
        await send(START)
        await send({"type": "http.response.body", "body": body})

    return app


def request(method: str = "GET", target: str = "/", *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: t", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def gated_hello() -> tuple[asyncio.Event, Any]:
    """``hello_app`` that answers only once the returned event is set."""
    gate = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await gate.wait()
        await hello_app(scope, receive, send)

    return gate, app


def fd_is_open(fd: int) -> bool:
    """Whether ``fd`` is an open file descriptor of this process (EBADF: it is not)."""
    try:
        os.fstat(fd)
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False
    return True

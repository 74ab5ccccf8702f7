"""``_direct``: plain connections on the generator's own epoll. Each rare turn of the transport
(a full socket, a failed write, a close with bytes still buffered, a reset, a peer's end) and
of the dispatcher (the hot path's write taking part of a request or failing, a connection lost
earlier in the same batch, a protocol that raises) on real sockets: Unix socket pairs, whose
buffers can be filled and whose peers can vanish at a chosen moment, and TCP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import uvloop

from prefork.load._client import _ClosedRun, _Conn
from prefork.load._direct import Sockets, SocketTransport
from prefork.load._openloop import _OpenRun
from prefork.load._response import ResponseParser
from prefork.load._schedule import RateSchedule
from prefork.load._tally import Tally
from prefork.load._target import Target

T = TypeVar("T")
HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
REQUEST = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def run(main: Callable[[], Awaitable[T]]) -> T:
    return uvloop.run(asyncio.wait_for(main(), 10))


async def until(check: Callable[[], object], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.001)


class Recording(asyncio.Protocol):
    """What the transport told it, in order."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))
        self.lost.set_result(exc)


R = TypeVar("R", bound=Recording)


def pair(sockets: Sockets, protocol: asyncio.Protocol) -> tuple[SocketTransport, socket.socket]:
    """A transport on one end of a Unix socket pair, and the other end (blocking)."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    return sockets.adopt(ours, protocol, ""), peer


def opened(protocol: R) -> tuple[Sockets, R, SocketTransport, socket.socket]:
    """The running loop's ``Sockets``, with ``protocol`` on one end of a pair (``pair``)."""
    sockets = Sockets(asyncio.get_running_loop())
    transport, peer = pair(sockets, protocol)
    return sockets, protocol, transport, peer


def fill(sock: socket.socket) -> None:
    """Fill ``sock``'s send buffer (non-blocking) until it takes no more."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with pytest.raises(BlockingIOError):
        while True:
            sock.send(b"x" * 65536)


def drain(peer: socket.socket, want: int) -> bytes:
    got = b""
    while len(got) < want:
        got += peer.recv(1 << 20)
    return got


def test_reads_writes_and_the_peers_end() -> None:
    async def main() -> list[Any]:
        sockets, protocol, transport, peer = opened(Recording())
        transport.write(b"ping")
        assert peer.recv(10) == b"ping"
        peer.sendall(b"pong")
        await until(lambda: b"pong" in protocol.events)
        assert transport.get_extra_info("socket") is not None
        peer.close()  # the end of stream: lost, no error
        assert await protocol.lost is None
        assert transport.is_closing()
        transport.write(b"dropped")  # after the end: nothing, no error
        sockets.close()
        sockets.close()  # twice: nothing more
        return protocol.events

    assert run(main) == ["made", b"pong", ("lost", None)]


def test_a_full_socket_buffers_then_sends_and_a_close_waits_for_it() -> None:
    async def main() -> None:
        sockets, protocol, transport, peer = opened(Recording())
        fill(transport.get_extra_info("socket"))
        transport.write(b"first")  # the socket takes nothing: buffered
        transport.write(b"second")  # behind it
        transport.close()
        transport.close()  # twice: once
        transport.write(b"dropped")
        assert transport.is_closing() and not protocol.lost.done()
        got = b""
        while not got.endswith(b"firstsecond"):  # what fill() sent, then the backlog
            got += await asyncio.get_running_loop().run_in_executor(None, peer.recv, 1 << 20)
        assert await protocol.lost is None
        assert peer.recv(10) == b""  # closed after the backlog
        sockets.close()

    run(main)


def test_a_backlog_sent_over_several_wake_ups_then_reading_again() -> None:
    async def main() -> list[Any]:
        sockets, protocol, transport, peer = opened(Recording())
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = b"y" * 300_000  # more than the socket takes at once: the rest in parts
        transport.write(big)
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, drain, peer, len(big)) == big
        peer.sendall(b"after")  # read again once the backlog is out
        await until(lambda: b"after" in protocol.events)
        transport.abort()
        transport.abort()  # twice: lost once
        assert await protocol.lost is None
        sockets.close()
        return protocol.events

    assert run(main) == ["made", b"after", ("lost", None)]


def test_a_failed_write_loses_the_connection_with_its_error() -> None:
    async def main() -> None:
        sockets, protocol, transport, peer = opened(Recording())
        peer.close()
        transport.write(b"to nobody")
        assert transport.is_closing()
        assert isinstance(await protocol.lost, BrokenPipeError)
        sockets.close()

    run(main)


def test_a_failed_flush_loses_the_connection_and_a_full_one_waits() -> None:
    async def main() -> None:
        sockets, protocol, transport, peer = opened(Recording())
        fill(transport.get_extra_info("socket"))
        transport.write(b"held")
        transport.flush()  # still full: waits, nothing lost
        assert not transport.is_closing()
        peer.close()  # the peer is gone: the flush fails
        assert isinstance(await protocol.lost, (BrokenPipeError, ConnectionResetError))
        sockets.close()

    run(main)


def test_a_reset_loses_the_connection_with_the_error() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        sockets = Sockets(loop)
        protocol = Recording()
        port = listener.getsockname()[1]
        transport, _ = await sockets.connect(lambda: protocol, "127.0.0.1", port)
        assert transport.get_extra_info("peername") == ("127.0.0.1", port)
        peer, _ = listener.accept()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()  # linger 0: a reset
        assert isinstance(await protocol.lost, ConnectionResetError)
        listener.close()
        sockets.close()

    run(main)


def test_a_protocol_that_raises_loses_only_its_connection() -> None:
    class Raising(Recording):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("a bug")

    async def main() -> tuple[Any, list[Any]]:
        handled: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: handled.append(context)
        )
        sockets = Sockets(asyncio.get_running_loop())
        bad, good = Raising(), Recording()
        _, bad_peer = pair(sockets, bad)
        _, good_peer = pair(sockets, good)
        bad_peer.sendall(b"x")
        error = await bad.lost
        good_peer.sendall(b"fine")
        await until(lambda: b"fine" in good.events)
        sockets.close()
        await good.lost
        assert [context["message"] for context in handled] == ["data_received failed"]
        return error, good.events

    error, events = run(main)
    assert isinstance(error, RuntimeError)
    assert events == ["made", b"fine", ("lost", None)]


def test_a_connection_lost_earlier_in_the_same_batch_is_skipped() -> None:
    class Closer(Recording):
        other: SocketTransport

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.other.abort()

    failures: list[dict[str, Any]] = []

    async def main() -> tuple[list[Any], list[Any]]:
        # An error out of the dispatcher goes to the loop's handler, not to the test.
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: failures.append(context)
        )
        sockets = Sockets(asyncio.get_running_loop())
        first, second = Closer(), Closer()
        one, one_peer = pair(sockets, first)
        two, two_peer = pair(sockets, second)
        first.other, second.other = two, one
        one_peer.sendall(b"1")
        two_peer.sendall(b"2")
        time.sleep(0.05)  # both ready before the loop looks: one wake-up, one batch
        await until(lambda: first.lost.done() or second.lost.done())
        sockets.close()  # the one that read is still open
        await first.lost
        await second.lost
        return first.events, second.events

    first, second = run(main)
    # Whichever was read first aborted the other, which was then not read.
    assert sorted([len(first), len(second)]) == [2, 3]
    assert failures == []


def test_connect_failures_name_the_reason() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sockets = Sockets(loop)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(OSError, match=r"^\[Errno 111\] Connection refused$"):
            await sockets.connect(Recording, "127.0.0.1", port)
        with pytest.raises(OSError):  # a name, resolved by the loop (and refused)
            await sockets.connect(Recording, "localhost", port)
        closed.close()
        sockets.close()

    run(main)


def test_connect_tries_each_address_and_names_every_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Loop:
        """The running loop, but for connects that fail as told and a name with no address."""

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self.loop = loop
            self.failures: list[OSError] = []

        def __getattr__(self, name: str) -> Any:
            return getattr(self.loop, name)

        async def sock_connect(self, sock: socket.socket, address: Any) -> None:
            if self.failures:
                raise self.failures.pop(0)
            await self.loop.sock_connect(sock, address)

        async def getaddrinfo(self, host: Any, *args: Any, **kwargs: Any) -> list[Any]:
            return []

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    four = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))

    async def main() -> None:
        sockets = Sockets(asyncio.get_running_loop())
        loop = Loop(sockets.loop)
        sockets.loop = loop  # type: ignore[assignment]
        monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [four, four, four])
        loop.failures = [OSError("no route"), OSError(113, "No route to host")]
        transport, _ = await sockets.connect(Recording, "127.0.0.1", port)  # the third address
        transport.abort()
        loop.failures = [OSError("first"), OSError("second"), OSError("third")]
        with pytest.raises(OSError, match=r"^Multiple exceptions: first, second, third$"):
            await sockets.connect(Recording, "127.0.0.1", port)
        loop.failures = [OSError("same")] * 3
        with pytest.raises(OSError, match=r"^same$"):
            await sockets.connect(Recording, "127.0.0.1", port)
        monkeypatch.setattr(socket, "getaddrinfo", no_address)
        with pytest.raises(OSError, match="no address for name:80"):
            await sockets.connect(Recording, "name", 80)
        monkeypatch.undo()
        sockets.loop = loop.loop
        await asyncio.sleep(0)  # the abort's connection_lost
        sockets.close()

    def no_address(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror("not a number")

    try:
        run(main)
    finally:
        listener.close()


def test_a_connect_cancelled_makes_nothing() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sockets = Sockets(loop)
        made: list[Recording] = []

        def make() -> Recording:
            made.append(Recording())
            return made[-1]

        # A listener whose queue is full: the connect waits (a SYN dropped), then is cancelled.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        held = [socket.create_connection(("127.0.0.1", port))]  # the queue's one place
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await sockets.connect(make, "127.0.0.1", port)
        assert made == []
        for sock in held:
            sock.close()
        listener.close()
        sockets.close()

    run(main)


# The dispatcher's hot path: a closed loop's whole response again.


class FakeTally:
    def __init__(self) -> None:
        self.sent = 0
        self.records: list[tuple[int, int]] = []

    def record(self, status: int, latency_us: int, nbytes: int) -> None:
        self.records.append((status, nbytes))


class FakeRun:
    def __init__(self) -> None:
        self.deadline_ns = time.monotonic_ns() + 60 * 10**9
        self.tally = FakeTally()


class HotConn(Recording):
    """A ``Hot`` connection whose parser has read ``HELLO`` once."""

    def __init__(self, request: bytes = REQUEST) -> None:
        super().__init__()
        self.run = FakeRun()
        self.parser = ResponseParser()
        self.parser.feed(HELLO)
        self.request = request
        self.busy = True
        self.failed = False
        self.answered = 0
        self.intended_ns = self.sent_ns = time.monotonic_ns()
        self.failures: list[str] = []

    def fail(self, kind: str, why: str | None = None) -> None:
        self.failures.append(kind)


def test_the_hot_path_records_and_sends_the_next_request() -> None:
    async def main() -> HotConn:
        sockets, conn, transport, peer = opened(HotConn())
        transport.hot = conn
        loop = asyncio.get_running_loop()
        for _ in range(3):
            peer.sendall(HELLO)
            assert await loop.run_in_executor(None, drain, peer, len(REQUEST)) == REQUEST
        peer.sendall(HELLO[:10])  # not the whole response: to data_received
        await until(lambda: HELLO[:10] in conn.events)
        conn.run.deadline_ns = 0  # past the deadline: to data_received
        peer.sendall(HELLO)
        await until(lambda: HELLO in conn.events)
        transport.abort()
        sockets.close()
        return conn

    conn = run(main)
    assert conn.answered == 3 and conn.run.tally.sent == 3
    assert conn.run.tally.records == [(200, len(HELLO))] * 3


def test_the_hot_path_buffers_what_the_socket_does_not_take() -> None:
    big = b"P" * 300_000

    async def main() -> HotConn:
        loop = asyncio.get_running_loop()
        sockets, conn, transport, peer = opened(HotConn(request=big))
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        transport.hot = conn
        peer.sendall(HELLO)
        assert await loop.run_in_executor(None, drain, peer, len(big)) == big
        peer.sendall(HELLO)  # the backlog is out by now: the hot path again
        assert await loop.run_in_executor(None, drain, peer, len(big)) == big
        transport.abort()
        sockets.close()
        return conn

    conn = run(main)
    assert conn.answered == 2 and conn.failures == []


def test_the_hot_path_with_a_backlog_leaves_the_read_to_data_received() -> None:
    async def main() -> HotConn:
        sockets, conn, transport, peer = opened(HotConn())
        fill(transport.get_extra_info("socket"))
        transport.write(b"held")  # a backlog: the next request would go out behind it
        transport.hot = conn
        peer.sendall(HELLO)
        await until(lambda: HELLO in conn.events)
        sockets.close()  # aborts it
        return conn

    conn = run(main)
    assert conn.answered == 0 and conn.run.tally.sent == 0


def test_the_hot_path_counts_a_failed_write() -> None:
    async def main() -> tuple[HotConn, Exception | None]:
        sockets, conn, transport, peer = opened(HotConn())
        transport.hot = conn
        peer.sendall(HELLO)
        peer.close()  # the response is there to read; the request has nowhere to go
        error = await conn.lost
        sockets.close()
        return conn, error

    conn, error = run(main)
    assert conn.answered == 1 and conn.failures == ["write"]
    assert isinstance(error, BrokenPipeError)


def test_only_a_closed_loop_with_one_request_is_answered_by_the_dispatcher() -> None:
    async def main() -> list[bool]:
        loop = asyncio.get_running_loop()
        sockets = Sockets(loop)
        deadline = time.monotonic() + 60
        rotating = Target("http://h/")
        rotating.rotation = ((REQUEST, False), (REQUEST, True))
        runs = [
            _ClosedRun(Target("http://h/"), 1, deadline, Tally(), 1.0, loop),
            _ClosedRun(rotating, 1, deadline, Tally(), 1.0, loop),
            _OpenRun(
                Target("http://h/"),
                1,
                RateSchedule(1, time.monotonic()),
                deadline,
                Tally(),
                1.0,
                loop,
            ),
        ]
        hot = []
        for run_ in runs:
            conn = _Conn(run_)
            transport, _ = pair(sockets, conn)
            hot.append(transport.hot is conn)
        sockets.close()
        await asyncio.sleep(0)
        runs[2]._timer.close()  # type: ignore[attr-defined]
        return hot

    assert run(main) == [True, False, False]

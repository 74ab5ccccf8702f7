"""Accepting connections spread over the workers (``_accept``): the board, the share rule,
and the acceptor on a real listening socket driven by a fake loop (time and timers in the
test's hands)."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
import uvloop
from _http_fakes import fd_is_open

from prefork.http._accept import (
    BATCH,
    DEFER_MAX,
    RECHECK,
    RETRY_AFTER,
    AcceptedFd,
    Acceptor,
    Share,
)
from prefork.worker import Board


class Waiter:
    """What connect_accepted_socket awaits (a transport's connection_made), finished by the
    test."""

    _asyncio_future_blocking = False

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Waiter], None]] = []
        self.error: BaseException | None = None
        self.finished = False

    def __await__(self) -> Generator[Waiter, None, None]:
        if not self.finished:
            self._asyncio_future_blocking = True
            yield self
        if self.error is not None:
            raise self.error

    def add_done_callback(self, callback: Callable[[Waiter], None]) -> None:
        self.callbacks.append(callback)

    def done(self) -> bool:
        return self.finished

    def finish(self, error: BaseException | None = None) -> None:
        self.finished, self.error = True, error
        for callback in self.callbacks:
            callback(self)


class Timer:
    def __init__(self, at: float, callback: Callable[[], None]) -> None:
        self.at, self.callback, self.cancelled = at, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    def __init__(self) -> None:
        self.now = 100.0
        self.reader: Callable[[], None] | None = None
        self.timers: list[Timer] = []
        self.soon: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self.served: list[tuple[Any, AcceptedFd, dict[str, Any]]] = []
        self.waiters: list[Waiter] = []
        self.refuse: BaseException | None = None  # raised by connect_accepted_socket at once
        self.waits = 1  # the futures connect_accepted_socket awaits in turn (1: uvloop's)

    def time(self) -> float:
        return self.now

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        assert self.reader is None
        self.reader = callback

    def remove_reader(self, fd: int) -> bool:
        removed = self.reader is not None
        self.reader = None
        return removed

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        self.soon.append((callback, args))

    def run_soon(self) -> None:
        """Run the callbacks scheduled so far (the loop's next turn)."""
        soon, self.soon = self.soon, []
        for callback, args in soon:
            callback(*args)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move time on and run the timers due."""
        self.now += seconds
        for timer in [t for t in self.timers if t.at <= self.now and not t.cancelled]:
            self.timers.remove(timer)
            timer.callback()

    async def connect_accepted_socket(
        self, factory: Callable[[], object], conn: AcceptedFd, **tls: Any
    ) -> None:
        self.served.append((factory(), conn, tls))
        if self.refuse is not None:
            raise self.refuse
        for _ in range(self.waits):
            waiter = Waiter()
            self.waiters.append(waiter)
            await waiter


class Held:
    """How many connections the worker serves, set by the test (what ``Share`` takes the
    len() of)."""

    def __init__(self, count: int = 0) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count


class Harness:
    """An acceptor on a real listening socket, with a fake loop, a board it shares with one
    peer (slot 1), and a count of held connections set by the test."""

    def __init__(self, sock: socket.socket | None = None, tls: Any = None) -> None:
        self.listener = sock or socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.loop = FakeLoop()
        self.board = Board()
        self.held = Held()
        self.share = Share(self.board, 0, self.held)
        self.acceptor = Acceptor(
            self.loop,  # type: ignore[arg-type]
            self.listener,
            lambda client, server, fd: (client, server, fd),  # type: ignore[arg-type,return-value]
            self.share,
            tls={"ssl": tls},
        )
        self.clients: list[socket.socket] = []

    def connect(self, n: int = 1) -> None:
        """Queue ``n`` connections on the listener (connect() returns once it is queued)."""
        port = self.listener.getsockname()[1]
        for _ in range(n):
            self.clients.append(socket.create_connection(("127.0.0.1", port)))

    def hold(self, n: int) -> None:
        """The worker holds ``n`` connections now (and says so, as it does when one
        closes)."""
        self.held.count = n
        self.share.publish()

    def wake(self, turn: bool = True) -> None:
        """The listener is readable (``turn``: and the loop's turn ends before any
        connection_made() runs)."""
        assert self.loop.reader is not None, "not reading"
        self.loop.reader()
        if turn:
            self.loop.run_soon()

    def close(self) -> None:
        self.acceptor.close()
        for _, conn, _ in self.loop.served:
            conn.close()
        for client in self.clients:
            client.close()
        self.listener.close()


def _blocking(fd: int) -> bool:
    return not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    harness.acceptor.start()
    yield harness
    harness.close()


# -- the board and the share rule ------------------------------------------------------------


def test_board_slots_hold_values_and_empty_ones_do_not_count() -> None:
    board = Board()
    assert board.values() == [] and board.fewest() == -1
    assert board.slot_of(3) == 3 and board.slot_of(Board.SLOTS + 3) == 3
    board.set(3, 0)
    board.set(5, 7)
    assert sorted(board.values()) == [0, 7] and board.fewest() == 0
    assert board.fewest(besides=3) == 7 and board.fewest(besides=5) == 0
    board.clear(3)
    assert board.values() == [7] and board.fewest() == 7 and board.fewest(besides=5) == -1


def test_share_is_above_beyond_the_fewest_plus_a_slack_that_grows() -> None:
    board = Board()
    held = Held()
    share = Share(board, 0, held)
    share.publish()
    assert board.values() == []  # not active yet: nothing published
    share.active = True
    board.set(1, 0)  # an idle peer
    for n, above in [(0, False), (2, False), (3, True)]:
        held.count = n
        share.publish()
        assert share.above(share.limit()) is above, n
    board.set(1, 16)  # a peer holding 16: slack 2 + 16 // 8
    held.count = 20
    share.publish()
    share.pending = 1
    assert share.held() == 21 and share.above(share.limit())
    share.pending = 0
    assert not share.above(share.limit())
    share.withdraw()
    assert board.values() == [16] and not share.active
    share.publish()
    assert board.values() == [16]
    assert share.held() == 20 and not share.above(share.limit())  # the peer alone counts now


def test_a_worker_alone_on_its_board_is_never_above() -> None:
    """Its own slot is not compared with: what it published lags what it holds (a batch of
    accepted connections is counted twice until their transports are made), and a lone
    worker that stepped aside only idled (Connection: close ran at 0.69x of uvloop's own
    accept before this)."""
    board = Board()
    held = Held()
    share = Share(board, 3, held)
    share.active = True
    share.publish()  # published 0
    held.count = 100
    assert not share.above(share.limit())
    board.set(7, 90)  # a peer joins, holding 90: slack 2 + 11
    assert not share.above(share.limit())
    board.set(7, 80)
    assert share.above(share.limit())


def test_without_a_board_a_worker_is_never_above() -> None:
    share = Share(None, 0, Held(1000))
    share.active = True
    share.publish()
    share.withdraw()
    assert not share.above(share.limit())


# -- the acceptor ----------------------------------------------------------------------------


def test_a_wake_up_accepts_what_is_queued_counted_until_served(h: Harness) -> None:
    assert h.board.values() == [0]  # started: present, holding none
    h.connect()
    h.wake()
    assert len(h.loop.served) == 1 and h.share.pending == 1 and h.board.values() == [1]
    addresses, conn, tls = h.loop.served[0]
    assert tls == {} and _blocking(conn.fd)  # no TLS keywords; uvloop makes it non-blocking
    assert conn.family == socket.AF_INET and conn.type == socket.SOCK_STREAM
    # The protocol is made with the addresses: the client's from accept(), the server's the
    # listener's own (bound to 127.0.0.1), and the fd (for its early FIN).
    assert addresses == (h.clients[0].getsockname(), h.listener.getsockname(), conn.fd)
    h.loop.waiters[0].finish()  # connection_made: the worker holds it now
    assert h.share.pending == 0
    h.connect(BATCH + 2)
    h.wake()  # at most BATCH at once, alone on the board (never above its share)
    assert len(h.loop.served) == 1 + BATCH and h.share.pending == BATCH
    h.wake()
    assert len(h.loop.served) == 3 + BATCH
    h.wake()  # the queue is empty (as when another worker took it): nothing happens
    assert len(h.loop.served) == 3 + BATCH and h.loop.reader is not None and not h.loop.timers


def test_a_wake_up_finishes_its_connections_in_one_callback_once_they_are_made(
    h: Harness,
) -> None:
    """uvloop schedules each transport's connection_made() as the acceptor makes it; one
    callback scheduled after the whole batch finds them all made, and finishes every connect
    coroutine in one go (a done-callback per connection cost a scheduled callback each)."""
    h.connect(3)
    h.wake(turn=False)
    assert h.share.pending == 3 and len(h.loop.soon) == 1  # one callback for the batch
    for waiter in h.loop.waiters:
        waiter.finish()  # connection_made() ran, earlier in the same turn
    assert h.share.pending == 3
    h.loop.run_soon()
    assert h.share.pending == 0 and not any(w.callbacks for w in h.loop.waiters)
    h.wake()  # the queue is empty: no callback
    assert h.loop.soon == []


def test_a_connection_not_made_by_the_batchs_callback_is_finished_when_it_is(
    h: Harness,
) -> None:
    """A TLS connection waits for its handshake: past the batch's callback, it is finished by
    its waiter's, however many futures its coroutine awaits in turn."""
    h.loop.waits = 2
    h.connect(2)
    h.wake(turn=False)
    h.loop.waiters[0].finish()  # the first made; the second's handshake under way
    h.loop.run_soon()
    assert h.share.pending == 2 and len(h.loop.waiters) == 3  # the first awaits again
    h.loop.waiters[1].finish()
    assert h.share.pending == 2 and len(h.loop.waiters) == 4
    h.loop.waiters[2].finish()
    h.loop.waiters[3].finish()
    assert h.share.pending == 0


def test_with_tls_the_protocol_gets_no_fd_to_send_a_fin_on() -> None:
    """A TLS connection's FIN must follow its close_notify: the protocol leaves it to the
    transport."""
    h = Harness(tls=object())
    h.acceptor.start()
    try:
        h.connect()
        h.wake()
        (_, _, fd), conn, tls = h.loop.served[0]
        assert fd is None and conn.fd >= 0 and tls["ssl"] is not None
    finally:
        h.close()


def test_a_wake_up_stops_accepting_at_its_share(h: Harness) -> None:
    h.board.set(1, 0)  # an idle peer: this worker may hold 2 more
    h.connect(5)
    h.wake()
    assert len(h.loop.served) == 3 and h.share.held() == 3 and h.loop.reader is None


def test_above_its_share_a_worker_steps_aside_until_a_peer_catches_up(h: Harness) -> None:
    h.board.set(1, 0)  # a peer holding nothing
    h.hold(3)
    h.connect()
    h.wake()
    assert h.loop.served == [] and h.loop.reader is None  # stepped aside
    assert [t.at for t in h.loop.timers] == [h.loop.now + RECHECK]
    h.loop.advance(RECHECK)
    assert h.loop.reader is not None
    h.wake()  # still above, well within DEFER_MAX: aside again
    assert h.loop.served == [] and h.loop.reader is None
    h.board.set(1, 2)  # the peer took connections
    h.loop.advance(RECHECK)
    h.wake()
    assert len(h.loop.served) == 1


def test_a_worker_aside_accepts_again_as_soon_as_a_close_brings_it_within_its_share(
    h: Harness,
) -> None:
    """Under ``Connection: close`` connections end long before RECHECK: a worker that waited
    it out idled while its peer's queue grew (2 workers at a third of 1 worker's rate)."""
    h.board.set(1, 0)
    h.hold(3)
    h.connect()
    h.wake()
    assert h.loop.reader is None and len(h.loop.timers) == 1  # stepped aside
    h.held.count = 3
    h.share.connection_closed()  # a close that leaves it above its share: still aside
    assert h.loop.reader is None and not h.loop.timers[0].cancelled
    h.held.count = 2
    h.share.connection_closed()  # within its share: reading again at once
    assert h.loop.reader is not None and h.loop.timers[0].cancelled
    assert h.board.values()[0] == 2 + h.share.pending  # and the count it published
    h.wake()
    assert len(h.loop.served) == 1 and h.loop.reader is None  # it holds 3 now: aside again
    h.loop.advance(RECHECK)
    timers = list(h.loop.timers)
    h.acceptor.recheck()  # not aside: nothing to do
    assert h.loop.reader is not None and h.loop.timers == timers


def test_a_worker_aside_for_defer_max_accepts_anyway(h: Harness) -> None:
    """A peer that holds few connections but does not accept (paused, hung, busy) does not
    stall the queue: after DEFER_MAX, this worker accepts until there is a quiet moment."""
    h.board.set(1, 0)
    h.hold(3)
    h.connect(3)
    began = h.loop.now
    while h.loop.now - began < DEFER_MAX:
        h.wake()
        assert h.loop.served == []
        h.loop.advance(RECHECK)
    h.wake()
    assert len(h.loop.served) == 3  # all that waited
    h.connect()
    h.loop.advance(RECHECK / 2)
    h.wake()  # still in the same burst
    assert len(h.loop.served) == 4
    h.connect()
    h.loop.advance(6 * RECHECK)  # a quiet moment: the next burst begins with stepping aside
    h.wake()
    assert len(h.loop.served) == 4 and h.loop.reader is None


def test_within_its_share_again_a_worker_forgets_it_stepped_aside(h: Harness) -> None:
    h.board.set(1, 0)
    h.hold(3)
    h.connect(2)
    h.wake()
    h.loop.advance(RECHECK)
    h.hold(0)
    h.wake()  # accepted both; the time aside is forgotten
    assert len(h.loop.served) == 2
    h.hold(3)
    h.connect()
    h.loop.now += DEFER_MAX  # however long since: stepping aside starts afresh
    h.wake()
    assert len(h.loop.served) == 2 and h.loop.reader is None


class FailingListener:
    """A listener whose accept() fails with ``error``."""

    family = socket.AF_INET

    def __init__(self, error: int) -> None:
        self.error = error

    def fileno(self) -> int:
        return 1000

    def setblocking(self, flag: bool) -> None:
        pass

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 8000)

    def _accept(self) -> tuple[int, Any]:
        raise OSError(self.error, "failed")

    def close(self) -> None:
        pass


def test_accept_errors(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(FailingListener(errno.ECONNABORTED))  # type: ignore[arg-type]
    h.acceptor.start()
    h.wake()  # that connection is gone: the next one may come at once
    assert h.loop.reader is not None and not h.loop.timers
    h.acceptor.sock = FailingListener(errno.EMFILE)  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR, "prefork.http"):
        h.wake()
    assert "accept() failed" in caplog.text and "retrying in 0.1 s" in caplog.text
    assert h.loop.reader is None and [t.at for t in h.loop.timers] == [h.loop.now + RETRY_AFTER]
    h.loop.advance(RETRY_AFTER)
    assert h.loop.reader is not None
    h.acceptor.close()


def test_a_connection_not_served_is_closed_and_not_counted(h: Harness) -> None:
    h.loop.refuse = ValueError("refused at once")
    h.connect()
    h.wake()
    _, first, _ = h.loop.served[0]
    assert h.share.pending == 0 and not fd_is_open(first.fd)
    h.loop.refuse = None
    h.connect()
    h.wake()
    _, second, _ = h.loop.served[1]
    h.loop.waiters[0].finish(ConnectionResetError("handshake failed"))
    assert h.share.pending == 0 and not fd_is_open(second.fd)


def test_close_stops_accepting_withdraws_and_closes_the_socket(h: Harness) -> None:
    h.board.set(1, 0)
    h.hold(3)
    h.connect()
    h.wake()  # aside, a timer pending
    h.acceptor.close()
    assert h.board.values() == [0] and h.loop.reader is None  # the peer's slot alone
    assert h.loop.timers[0].cancelled and h.listener.fileno() == -1
    h.acceptor.close()  # twice: nothing more
    h.acceptor._resume()  # a timer that fired anyway
    assert h.loop.reader is None


def test_close_while_reading(h: Harness) -> None:
    h.acceptor.close()
    assert h.loop.reader is None and h.board.values() == [] and not h.loop.timers


def test_uvloop_makes_an_accepted_socket_non_blocking() -> None:
    """The acceptor leaves the accepted socket as accept() made it (a system call saved per
    connection): uvloop's transport must make it non-blocking, or a read would block."""

    async def serve(listener: socket.socket, client: socket.socket) -> int:
        loop = asyncio.get_running_loop()
        fd, _ = listener._accept()  # type: ignore[attr-defined]
        conn = AcceptedFd(fd, socket.AF_INET)
        assert _blocking(fd)
        transport, _ = await loop.connect_accepted_socket(
            asyncio.Protocol,
            conn,  # type: ignore[arg-type]  # what uvloop reads of a socket
        )
        flags = fcntl.fcntl(transport.get_extra_info("socket").fileno(), fcntl.F_GETFL)
        transport.close()
        return flags

    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()) as client:
        flags = uvloop.run(serve(listener, client))
    assert flags & os.O_NONBLOCK


def test_settled_waits_until_every_accepted_connection_reached_its_protocol() -> None:
    """What a drain waits for after it stopped accepting: a connection accepted in the loop's
    last turn is not a protocol of the worker yet, and would be left unanswered."""

    async def main() -> None:
        h = Harness()
        h.acceptor.start()
        try:
            await asyncio.wait_for(h.share.settled(60), 1)  # nothing pending: at once
            h.connect(2)
            h.wake()
            settled = asyncio.ensure_future(h.share.settled(60))
            for _ in range(3):
                await asyncio.sleep(0)
            assert not settled.done() and h.share.pending == 2
            h.loop.waiters[0].finish()
            await asyncio.sleep(0)
            assert not settled.done()  # one is still on its way
            h.loop.waiters[1].finish(ConnectionResetError())  # gone before connection_made
            await asyncio.wait_for(settled, 1)
            assert h.share.pending == 0
            h.connect()
            h.wake()
            h.loop.waiters[2].finish()  # the drain's wait is over: nothing to wake
            assert h.share.pending == 0
        finally:
            h.close()

    uvloop.run(main())


def test_settled_gives_up_after_its_bound_and_can_be_waited_for_again() -> None:
    """A TLS client that never finishes its handshake stays pending: the drain's wait ends at
    its bound, and a later wait still ends when the connection does."""

    async def main() -> None:
        h = Harness()
        h.acceptor.start()
        try:
            h.connect()
            h.wake()
            started = asyncio.get_running_loop().time()
            await asyncio.wait_for(h.share.settled(0.05), 5)
            assert h.share.pending == 1 and asyncio.get_running_loop().time() - started < 4
            first = asyncio.ensure_future(h.share.settled(60))
            second = asyncio.ensure_future(h.share.settled(60))
            await asyncio.sleep(0)
            h.loop.waiters[0].finish()
            await asyncio.wait_for(asyncio.gather(first, second), 1)
        finally:
            h.close()

    uvloop.run(main())

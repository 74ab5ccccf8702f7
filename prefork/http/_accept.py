"""Accepting connections, spread evenly over the workers of a broker.

Every worker waits on the broker's one listening socket, and the kernel wakes them all when
a connection arrives. uvloop's own server (libuv) then accepts every queued connection in one
go, so the worker that runs first takes a whole burst: 16 keep-alive connections opened
together landed 16/0 or 15/1 on two workers, one core doing all the work.

So a worker accepts here (at most ``BATCH`` per wake-up), and only while it holds no more
than a slack (``Share.limit``) beyond the fewest connections any other worker of the broker
holds; each worker shares its count on the broker's ``Board`` (shared memory: no system call
to read the others'). Above that it steps aside (``RECHECK``) and the kernel's wake-up lets a
worker with fewer take the connection. Fairness never stalls a connection: a worker that has
stepped aside for ``DEFER_MAX`` (its peers are busy, paused, or hung with few connections)
accepts again until the queue is empty.

A rule without the board was tried first: one accept per wake-up (nginx's ``multi_accept
off``), leaving the next connection to whichever worker the kernel woke. It spread no better
than uvloop (16 with 2 workers, 6 trials: 16/0 twice, 13/3, 12/4 twice, 9/7): a worker
accepts its next connection faster than its peer is scheduled.

Rejected: a SO_REUSEPORT socket per worker (what granian does): the kernel spreads by a hash,
16 connections over 2 workers exceed 10/6 one time in five, and the connections queued on a
leaving worker's socket are lost (``tcp_migrate_req`` aside). ``EPOLLEXCLUSIVE``: libuv does not
let us set it on its own epoll, and an epoll fd of our own nested in libuv's is woken for
every connection, exclusive or not. nginx's accept mutex: one worker at a time, a lock a
worker killed with -9 may hold; nginx itself turned it off by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Coroutine, Sized
from typing import Any

from prefork.http._scope import ClientAddress, ServerAddress, server_address
from prefork.worker import Board

logger = logging.getLogger("prefork.http")

#: The most connections accepted at one wake-up: each wake-up costs a turn of the loop (the
#: CPU per connection of ``Connection: close`` was ~10% lower than one at a time), and the
#: share rule keeps the spread whatever the batch.
BATCH = 16
#: How long a worker above its share steps aside before it looks at the queue again.
RECHECK = 0.001
#: How long in all it steps aside before it accepts whatever its peers hold.
DEFER_MAX = 0.05
#: After a failed accept() for want of resources (EMFILE...), how long before the next try.
RETRY_AFTER = 0.1
#: Errors of accept() that concern only the connection at hand (the client reset it).
_CONNECTION_ERRORS = {errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET, errno.EPERM}


def fixed_server_address(sock: socket.socket) -> ServerAddress | None:
    """The local address of every connection accepted on ``sock``: the one it is bound to,
    unless that is a wildcard (0.0.0.0, ::), where it is the address the client dialled, one
    ``getsockname()`` per connection (None)."""
    name = sock.getsockname()
    if isinstance(name, tuple) and ipaddress.ip_address(name[0].partition("%")[0]).is_unspecified:
        return None
    return server_address(name)


class AcceptedFd:
    """An accepted connection's file descriptor, handed to uvloop's
    ``connect_accepted_socket`` in place of a ``socket.socket``: it reads ``family``, ``type``
    and ``fileno()``, and at the transport's end calls ``close()``. A ``socket.socket`` costs
    ~0.6 us more per connection (its ``__init__`` and ``detach()`` are Python code, and its
    family and type are properties that make an enum each time).

    Who closes the fd: uvloop's transport, from the moment it takes it (``fileno()``), and so
    ``close()`` then does nothing (the number may already belong to a new connection); before
    that (a protocol factory that raised), ``close()`` does.
    """

    __slots__ = ("family", "fd", "taken")
    type = socket.SOCK_STREAM

    def __init__(self, fd: int, family: int) -> None:
        self.fd = fd
        self.family = family
        self.taken = False

    def fileno(self) -> int:
        self.taken = True  # uvloop's transport owns the fd now
        return self.fd

    def close(self) -> None:
        if not self.taken:
            self.taken = True
            os.close(self.fd)


class Share:
    """This worker's part in the broker's ``Board``: how many connections it holds."""

    def __init__(self, board: Board | None, slot: int, serving: Sized) -> None:
        self.board = board
        self.slot = slot
        self._serving = serving  # the connections the worker serves now (its len())
        self.pending = 0  # accepted, not yet served (their transport is being made)
        self.active = False
        self.acceptors: list[Acceptor] = []  # this worker's, told when a connection closes
        self._settled: asyncio.Future[None] | None = None  # a drain waiting for pending == 0

    def held(self) -> int:
        return len(self._serving) + self.pending

    def publish(self) -> None:
        """Tell the other workers how many connections this one holds (when it accepts)."""
        # held() inline: this runs twice per connection (the CPU of Connection: close)
        if self.active and self.board is not None:
            self.board.set(self.slot, len(self._serving) + self.pending)

    def connection_closed(self) -> None:
        """One of this worker's connections closed: publish the new count, and let an
        acceptor that stepped aside take connections again if it is within its share."""
        self.publish()
        for acceptor in self.acceptors:
            acceptor.recheck()

    def served(self) -> None:
        """A connection accepted is now its protocol's (connection_made ran), or is gone."""
        self.pending -= 1
        if not self.pending and self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    async def settled(self, within: float) -> None:
        """Wait until every connection accepted so far has reached its protocol (a drain
        that looked only at the protocols would miss one accepted in the loop's last turn,
        and leave with its request unanswered), or ``within`` seconds: a TLS client that
        never finishes its handshake must not hold a drain."""
        if not self.pending:
            return
        if self._settled is None or self._settled.done():
            self._settled = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._settled), within)

    def withdraw(self) -> None:
        """Stop counting for the spread (this worker accepts no more)."""
        self.active = False
        if self.board is not None:
            self.board.clear(self.slot)

    def limit(self) -> int | None:
        """The most connections this worker may hold before it steps aside (None: no limit):
        the fewest any other worker of the broker holds, plus a slack that grows with them
        (an eighth, as nginx's ``accept_disabled``), so that a busy pool is not shuffled for
        one connection. A worker alone has none: its own slot is not compared with (what it
        published may lag what it holds by a loop turn, and a lone worker that stepped aside
        would only idle)."""
        if self.board is None:
            return None
        fewest = self.board.fewest(besides=self.slot)
        return None if fewest < 0 else fewest + 2 + fewest // 8

    def above(self, limit: int | None) -> bool:
        """Whether this worker holds more than ``limit`` (from ``limit()``)."""
        return limit is not None and self.held() > limit


#: Connections accepted at one wake-up, each with its connect coroutine and the future that
#: coroutine waits on (its connection_made(), or a TLS handshake).
Made = list[tuple[Coroutine[Any, Any, Any], AcceptedFd, asyncio.Future[Any]]]

#: Makes the protocol of a connection from its ``client`` and ``server`` addresses (known from
#: accept() and the listening socket: no system call to ask the transport for them; a
#: ``server`` of None is asked, as for a wildcard bind) and its fd, for an early FIN (None with
#: TLS: ``FlowControl``).
ProtocolFactory = Callable[
    [ClientAddress | None, ServerAddress | None, int | None], asyncio.Protocol
]


class Acceptor:
    """Accept connections on ``sock`` into protocols made by ``factory`` while ``share`` says
    this worker is not above its share (module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: ProtocolFactory,
        share: Share,
        *,
        tls: dict[str, Any],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.share = share
        self.tls = tls
        self._fd = sock.fileno()
        self._family = int(sock.family)
        self._inet = self._family in (socket.AF_INET, socket.AF_INET6)  # else a Unix socket
        self._server = fixed_server_address(sock)
        self._client: ClientAddress | None = None  # of the connection being accepted
        self._conn_fd: int | None = None  # and its fd, unless TLS must close it
        self._plain = tls.get("ssl") is None
        self.accepting = False
        self._since = 0.0  # when this worker began to step aside (0.0: it has not)
        self._last = 0.0  # when it last did
        self._waiting: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.accepting = True
        self.share.acceptors.append(self)
        self.share.active = True
        self.share.publish()
        self.loop.add_reader(self._fd, self._ready)

    def close(self) -> None:
        """Stop accepting and close this worker's copy of the socket (as uvloop's server
        does): what is queued is left to the other workers, the master's copy keeps it."""
        if self.accepting:
            self.accepting = False
            self.share.withdraw()
            self.share.acceptors.remove(self)
            self.loop.remove_reader(self._fd)
            if self._waiting is not None:
                self._waiting.cancel()
                self._waiting = None
            self.sock.close()

    def recheck(self) -> None:
        """One of this worker's connections closed: if it stepped aside and is no longer above
        its share, accept again now, not when ``RECHECK`` ends. Under ``Connection: close`` a
        connection ends long before that, and a worker that waited it out idled while its
        peer's queue grew (2 workers served 5,000 req/s where one served 16,000)."""
        if self._waiting is not None and not self.share.above(self.share.limit()):
            self._waiting.cancel()
            self._resume()

    def _step_aside(self, delay: float) -> None:
        self.loop.remove_reader(self._fd)
        self._waiting = self.loop.call_later(delay, self._resume)

    def _resume(self) -> None:
        self._waiting = None
        if self.accepting:
            self.loop.add_reader(self._fd, self._ready)

    def _ready(self) -> None:
        """The socket is readable: accept up to ``BATCH`` connections, one at a time while
        this worker is not above its share (``_accept_one``)."""
        limit = self.share.limit()  # the peers' counts, read once per wake-up
        made: Made = []
        for _ in range(BATCH):
            if not self._accept_one(limit, made):
                break
        if made:
            # After the connection_made() of each (uvloop scheduled them as it made the
            # transports): one callback per wake-up, not a waiter's callback per connection.
            self.loop.call_soon(self._settle, made)

    def _accept_one(self, limit: int | None, made: Made) -> bool:
        """Accept one connection, unless this worker steps aside; whether to try another.
        A connection whose connect coroutine waits (for connection_made) joins ``made``."""
        if limit is not None and self.share.above(limit):  # (no call for a lone worker)
            now = self.loop.time()
            if not self._since or now - self._last > 5 * RECHECK:
                self._since = now  # a new burst (after a quiet time, the queue was empty)
            self._last = now
            if now - self._since < DEFER_MAX:
                self._step_aside(RECHECK)
                return False
        else:
            self._since = 0.0
        try:
            fd, client = self.sock._accept()  # type: ignore[attr-defined]  # no socket object
        except (BlockingIOError, InterruptedError):
            return False  # none left, or another worker took it
        except OSError as exc:
            if exc.errno in _CONNECTION_ERRORS:
                return True  # that connection is gone: the next may be there
            logger.error("accept() failed: %s; retrying in %.1f s", exc, RETRY_AFTER)
            self._step_aside(RETRY_AFTER)
            return False
        # No setblocking(): uvloop makes the socket non-blocking itself when it opens the
        # transport.
        conn = AcceptedFd(fd, self._family)
        self._client = client[:2] if self._inet else None  # client_address(), inline
        self._conn_fd = fd if self._plain else None
        share = self.share
        share.pending += 1
        share.publish()
        # connect_accepted_socket() is a coroutine that makes the protocol at once (in this
        # first step: ``_protocol`` reads ``_client`` now), makes the transport (uvloop sets
        # TCP_NODELAY) and waits for connection_made() (with TLS: for the handshake); it is
        # stepped here as a Task would step it, without a Task's cost per connection.
        if self._plain:  # no keywords: a faster call
            accepted = self.loop.connect_accepted_socket(self._protocol, conn)  # type: ignore[arg-type]
        else:
            accepted = self.loop.connect_accepted_socket(
                self._protocol,
                conn,  # type: ignore[arg-type]  # what uvloop reads of a socket (AcceptedFd)
                **self.tls,
            )
        waiter = self._step(accepted, conn)
        if waiter is not None:
            made.append((accepted, conn, waiter))
        return True

    def _protocol(self) -> asyncio.Protocol:
        return self.factory(self._client, self._server, self._conn_fd)

    def _settle(self, made: Made) -> None:
        """Finish the connect coroutines of one wake-up whose connection_made() ran; one
        still waiting (a TLS handshake) goes on when its waiter is done."""
        for coro, conn, waiter in made:
            if waiter.done():
                waiter = self._step(coro, conn)
            if waiter is not None:
                self._finish_later(coro, conn, waiter)

    def _finish(self, coro: Coroutine[Any, Any, Any], conn: AcceptedFd) -> None:
        waiter = self._step(coro, conn)
        if waiter is not None:
            self._finish_later(coro, conn, waiter)

    def _finish_later(
        self, coro: Coroutine[Any, Any, Any], conn: AcceptedFd, waiter: asyncio.Future[Any]
    ) -> None:
        waiter.add_done_callback(lambda _: self._finish(coro, conn))

    def _step(self, coro: Coroutine[Any, Any, Any], conn: AcceptedFd) -> Any:
        """Run ``coro`` to its next wait, as a Task would step it: the future it waits on,
        or None once it is over (the connection is served, or is not)."""
        try:
            waiter = coro.send(None)
        except StopIteration:
            self.share.served()
        except Exception as exc:
            self.share.served()
            conn.close()
            logger.debug("connection not served: %r", exc)  # a failed TLS handshake
        else:
            waiter._asyncio_future_blocking = False  # as a Task does, having taken it
            return waiter
        return None

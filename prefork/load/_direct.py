"""Plain-HTTP connections that ``prefork load`` reads and writes itself, on an epoll of its own
nested in the event loop's, in place of uvloop's transports (issue 23, item 8).

Why: in wrk's closed loop against nginx, ``prefork load`` spent about 1.7 us of user CPU per
request where wrk spends well under one: uvloop's read callback, then five Python calls
(``data_received``, the parser, the tally, the loop's ``idle``, ``send``) and the write. Here
one callback of the loop per wake-up (the nested epoll's fd became readable) reads every ready
connection in a plain loop, and the common case of a closed loop, a read that is the whole
response again (``ResponseParser.again``), is recorded and answered with the next request
right there: one call (the tally's ``record``) per request. Any other read goes to the
protocol's ``data_received``. The system calls per request stay one ``read`` and one
``write`` (wrk adds two ``epoll_ctl``).

``SocketTransport`` keeps the ``asyncio.Transport`` contract that ``_client._Conn`` relies on:
``connection_made`` before ``connect`` returns, ``connection_lost`` exactly once and from the
loop (never from inside ``write`` or ``abort``), ``close`` sends what is buffered first,
``abort`` does not, ``is_closing`` is true from the first of ``close``, ``abort``, a failed
read or write, or the peer's end of stream. TLS stays on uvloop's transports (``ssl`` there
does the record layer); so do scenarios, whose cost is the user's coroutine.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time
import typing
from collections.abc import Callable

from prefork.load._response import ResponseParser

#: The most bytes one read takes: a larger response is read over several wake-ups.
READ_SIZE = 65536
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT


class HotTally(typing.Protocol):
    """What the hot path counts in (``_tally.Tally``)."""

    sent: int

    def record(self, status: int, latency_us: int, nbytes: int) -> None: ...


class HotRun(typing.Protocol):
    """The run a hot connection belongs to (``_client._ClosedRun``)."""

    deadline_ns: int

    @property
    def tally(self) -> HotTally: ...


class Hot(typing.Protocol):
    """A connection of a closed loop with one request (``_client._Conn``): the dispatcher
    records a whole response again and sends the next request for it."""

    parser: ResponseParser
    request: bytes
    busy: bool
    failed: bool
    answered: int
    intended_ns: int
    sent_ns: int

    @property
    def run(self) -> HotRun: ...

    def fail(self, kind: str, why: str | None = None) -> None: ...


class SocketTransport(asyncio.Transport):
    """One connected, non-blocking socket of a ``Sockets``, and the protocol it feeds."""

    __slots__ = ("_backlog", "_closing", "_fd", "_protocol", "_sock", "_sockets", "hot", "received")

    def __init__(
        self, sockets: Sockets, sock: socket.socket, protocol: asyncio.Protocol, peername: object
    ) -> None:
        super().__init__({"socket": sock, "peername": peername})
        self._sockets = sockets
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self.received = protocol.data_received  # bound once: it runs per read
        self._backlog = bytearray()  # what the socket did not take yet
        self._closing = False
        #: Set by a protocol whose whole responses again the dispatcher may answer (``Hot``).
        self.hot: Hot | None = None

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:  # as asyncio's: bytes written after a close are dropped
            return
        if self._backlog:
            self._backlog += data
            return
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.lost(exc)
            return
        if sent < len(data):
            self._hold(data, sent)

    def write_rest(self, data: bytes, sent: int) -> None:
        """The dispatcher's own write took ``sent`` bytes of ``data`` (-1: it raised): the rest
        goes as ``write`` would send it (buffered, or the failure that closes)."""
        if sent < 0:
            self.write(data)  # again, to learn why (or to buffer it when the socket was full)
        else:
            self._hold(data, sent)

    def _hold(self, data: bytes | bytearray | memoryview, sent: int) -> None:
        """Keep what the socket did not take of ``data``; send it when it is writable."""
        self._backlog += memoryview(data)[sent:]
        self._sockets.watch(self._fd, _IN | _OUT)

    def close(self) -> None:
        """Stop reading; send what is buffered, then close."""
        if self._closing:
            return
        self._closing = True
        if self._backlog:
            self._sockets.watch(self._fd, _OUT)
        else:
            self.lost(None)

    def abort(self) -> None:
        """Close now: what is buffered is dropped."""
        self.lost(None)

    def flush(self) -> None:
        """The socket is writable again: send the backlog (then close, if asked to)."""
        try:
            sent = os.write(self._fd, self._backlog)
        except BlockingIOError:  # woken by an error or a hang-up, not by room to write
            return
        except OSError as exc:
            self.lost(exc)
            return
        del self._backlog[:sent]
        if not self._backlog:
            if self._closing:
                self.lost(None)
            else:
                self._sockets.watch(self._fd, _IN)

    def lost(self, exc: Exception | None) -> None:
        """The end, once: the socket is closed now, ``connection_lost(exc)`` runs from the
        loop (its caller may be in the middle of ``data_received``)."""
        self._closing = True
        if self._sockets.forget(self._fd, self):
            self._backlog.clear()
            self._sock.close()
            self._sockets.loop.call_soon(self._protocol.connection_lost, exc)


class Sockets:
    """The plain connections of one run, on an epoll whose fd the loop watches: ``connect``
    adds one; ``close`` (the run's end, once every connection is lost) releases the epoll."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self._poll = self._epoll.poll
        self._transports: dict[int, SocketTransport] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)

    def close(self) -> None:
        """Abort what is left and stop watching."""
        for transport in list(self._transports.values()):
            transport.abort()
        if not self._epoll.closed:
            self.loop.remove_reader(self._epoll.fileno())
            self._epoll.close()

    async def connect(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int
    ) -> tuple[SocketTransport, asyncio.Protocol]:
        """A connection to ``host``:``port`` (each of its addresses in turn, as
        ``loop.create_connection``), made by ``factory()``'s protocol. Raises OSError (the
        address's, or one naming each when several failed)."""
        try:  # a number needs no resolver (and no thread): the common case, and reconnects
            infos = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        errors: list[OSError] = []
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await self.loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                # "[Errno 111] Connection refused", as uvloop says it (its sock_connect says
                # "Connect call failed" and the address, which the caller names already).
                errors.append(OSError(exc.errno, os.strerror(exc.errno)) if exc.errno else exc)
                continue
            except BaseException:  # cancelled (a timeout): nothing was made
                sock.close()
                raise
            protocol = factory()
            # The address connected to, not getpeername(): a reset by now would raise there.
            return self.adopt(sock, protocol, address), protocol
        if not errors:
            raise OSError(f"no address for {host}:{port}")
        if len({str(exc) for exc in errors}) == 1:
            raise errors[0]
        raise OSError("Multiple exceptions: " + ", ".join(str(exc) for exc in errors))

    def adopt(
        self, sock: socket.socket, protocol: asyncio.Protocol, peername: object
    ) -> SocketTransport:
        """Serve ``protocol`` on ``sock`` (connected to ``peername``, non-blocking) from now on."""
        transport = SocketTransport(self, sock, protocol, peername)
        self._transports[transport._fd] = transport
        self._epoll.register(transport._fd, _IN)
        protocol.connection_made(transport)
        return transport

    def watch(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, events)

    def forget(self, fd: int, transport: SocketTransport) -> bool:
        """Stop watching ``transport``; False when it was already forgotten."""
        if self._transports.get(fd) is not transport:
            return False
        del self._transports[fd]
        self._epoll.unregister(fd)
        return True

    def _ready(self) -> None:
        """Some connections are ready: read (or flush) each, in one turn of the loop."""
        transports = self._transports
        read = os.read
        write = os.write
        clock = time.monotonic_ns
        for fd, events in self._poll(0):
            transport = transports.get(fd)
            if transport is None:  # lost earlier in this batch
                continue
            if events != _IN:  # rare: writable, an error or the peer's hang-up
                if transport._backlog:
                    transport.flush()
                if transport._closing:  # lost, or closing: reads no more
                    continue
            try:
                data = read(fd, READ_SIZE)
            except BlockingIOError:  # writable only; or a new socket reusing a lost one's fd
                continue
            except OSError as exc:
                transport.lost(exc)
                continue
            hot = transport.hot
            if hot is not None and data == hot.parser.again and hot.busy and not hot.failed:
                now = clock()
                run = hot.run
                if now < run.deadline_ns and not transport._backlog:
                    # The closed loop's turn, as ``_Conn.data_received`` then ``send`` would
                    # take it: the response recorded, the next request sent at once.
                    tally = run.tally
                    tally.record(
                        hot.parser.again_parsed[0], (now - hot.intended_ns) // 1000, len(data)
                    )
                    hot.answered += 1
                    hot.intended_ns = hot.sent_ns = now
                    tally.sent += 1
                    request = hot.request
                    try:
                        sent = write(fd, request)
                    except OSError:
                        sent = -1
                    if sent != len(request):  # rare: the socket took part of it, or failed
                        transport.write_rest(request, sent)
                        if transport._closing:
                            hot.fail("write")
                    continue
            if not data:  # the peer's end of stream: the connection is done (asyncio's default)
                transport.lost(None)
                continue
            try:
                transport.received(data)
            except Exception as exc:  # a bug of the protocol's: that connection only (as uvloop)
                self.loop.call_exception_handler(
                    {"message": "data_received failed", "exception": exc, "transport": transport}
                )
                transport.lost(exc)

"""The bounds of the master's side servers against peers that stall: a request whole within
a deadline from its first byte, an answer written as long as the peer reads (made piece by
piece), and a full house that a new connection can still get into. Real sockets, a selector
pumped by hand, the servers' clock in the test's hands."""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_control import client, closed, control, pump, read_line

from prefork.ops import _side
from prefork.ops._metrics_http import MetricsEndpoint
from prefork.ops._side import Phase, SideServer


class Clock:
    """``time`` as the side servers see it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(_side, "time", fake)
    return fake


@pytest.fixture
def selector() -> Iterator[selectors.DefaultSelector]:
    with selectors.DefaultSelector() as sel:
        yield sel


class Exposition:
    """A render that counts the pieces made so far."""

    def __init__(self, pieces: int, size: int = 65536) -> None:
        self.made = 0
        self.pieces = pieces
        self.size = size

    def __call__(self) -> Iterator[str]:
        for i in range(self.pieces):
            self.made += 1
            yield chr(ord("a") + i % 26) * self.size


def endpoint(
    selector: selectors.BaseSelector, render: Exposition | None = None
) -> tuple[MetricsEndpoint, tuple[str, int]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    made = MetricsEndpoint(listener, selector, render or Exposition(1, 10), dict)
    return made, listener.getsockname()


def connect(address: tuple[str, int], selector: selectors.BaseSelector) -> socket.socket:
    sock = socket.create_connection(address, timeout=2)
    pump(selector)
    return sock


def test_a_request_must_be_whole_within_its_deadline_from_the_first_byte(
    clock: Clock, selector: selectors.DefaultSelector
) -> None:
    """One byte now and then does not keep a slot (the deadline was refreshed per byte)."""
    server, address = endpoint(selector)
    sock = connect(address, selector)
    (peer,) = server.peers.values()
    assert (peer.phase, server.deadline()) == (Phase.IDLE, 1000.0 + server.IDLE_TIMEOUT)
    clock.now += 4
    sock.sendall(b"G")
    pump(selector)
    assert (peer.phase, server.deadline()) == (Phase.READING, 1004.0 + server.REQUEST_TIMEOUT)
    for _ in range(4):
        clock.now += 1
        sock.sendall(b"E")
        pump(selector)
        assert server.deadline() == 1004.0 + server.REQUEST_TIMEOUT
    server.expire(1004.0 + server.REQUEST_TIMEOUT)
    assert not server.peers and closed(selector, sock)
    server.close()


def test_an_idle_control_peer_gets_a_new_deadline_with_each_request(
    tmp_path: Path, clock: Clock, selector: selectors.DefaultSelector
) -> None:
    server, _, path = control(tmp_path, selector)
    sock = client(path)
    pump(selector)
    (peer,) = server.peers.values()
    assert server.deadline_of(peer) == 1000.0 + server.IDLE_TIMEOUT
    clock.now += 50
    sock.sendall(b'{"v":1,"cmd":"status"}\n{"v":1,')  # a whole request and a part
    assert read_line(selector, sock)["ok"] is True
    # The part is a new request: its deadline runs from now, not from the first one's byte.
    assert (peer.phase, server.deadline_of(peer)) == (Phase.READING, 1050 + 10.0)
    sock.sendall(b'"cmd":"status"}\n')
    assert read_line(selector, sock)["ok"] is True
    assert (peer.phase, server.deadline_of(peer)) == (Phase.IDLE, 1050 + server.IDLE_TIMEOUT)
    server.close()


def test_a_full_house_lets_the_owner_in_in_place_of_the_peer_that_waited_longest(
    tmp_path: Path, clock: Clock, selector: selectors.DefaultSelector
) -> None:
    """16 idle connections made `prefork ctl` fail for 60 s: now the newcomer takes the
    place of the peer that has waited longest without a whole request."""
    server, _, path = control(tmp_path, selector)
    idle = []
    for _ in range(SideServer.MAX_PEERS):
        idle.append(client(path))
        pump(selector)
        clock.now += 1
    idle[0].sendall(b'{"v":1,')  # the oldest starts a request now: it waited least since
    pump(selector)
    owner = client(path)
    pump(selector)
    assert closed(selector, idle[1]) and len(server.peers) == SideServer.MAX_PEERS
    owner.sendall(b'{"v":1,"cmd":"status"}\n')
    assert read_line(selector, owner)["ok"] is True
    assert not closed(selector, idle[0])
    for sock in [*idle, owner]:
        sock.close()
    server.close()


def test_when_every_peer_is_being_answered_the_slowest_gives_way(
    clock: Clock, selector: selectors.DefaultSelector
) -> None:
    server, address = endpoint(selector, Exposition(400))
    readers = []
    for _ in range(SideServer.MAX_PEERS):
        readers.append(connect(address, selector))
        readers[-1].sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        pump(selector)
        clock.now += 1
    assert all(p.phase is Phase.WRITING for p in server.peers.values())
    # Which answer went out slowest depends on when each socket's buffer filled.
    slowest = min(server.peers.values(), key=lambda p: p.since)
    others = [p for p in server.peers.values() if p is not slowest]
    newcomer = socket.create_connection(address, timeout=2)
    server.ready(server.listener, selectors.EVENT_READ)  # the accept alone: nothing else moves
    assert slowest.sock.fileno() == -1 and all(p.sock in server.peers for p in others)
    newcomer.sendall(b"GET / HTTP/1.1\r\n\r\n")
    pump(selector)
    assert newcomer.recv(65536).startswith(b"HTTP/1.1 200 OK")
    for sock in [*readers, newcomer]:
        sock.close()
    server.close()


def test_a_slow_reader_gets_a_long_exposition_whole_made_as_it_reads(
    clock: Clock, selector: selectors.DefaultSelector
) -> None:
    """The scrape that arrived cut short (dropped 5 s after its last read while its answer was
    still being written): the deadline follows the reader's progress, and the master holds at
    most LOW_WATER plus one piece of the answer at a time."""
    render = Exposition(100)  # 6.25 MiB
    server, address = endpoint(selector, render)
    sock = connect(address, selector)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    (peer,) = server.peers.values()
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    pump(selector)
    received = bytearray()
    most = 0
    while chunk := sock.recv(1 << 20):
        received += chunk
        clock.now += 1  # a second per read: far slower than the deadline's 10 s in all
        pump(selector)
        most = max(most, len(peer.output))
        server.expire(clock.now)  # as the master's loop does: it is never due
        assert render.made <= len(received) // render.size + 10  # not made far ahead
    assert most <= server.LOW_WATER + render.size + 64
    body = bytes(received).split(b"\r\n\r\n", 1)[1]
    assert body.endswith(b"0\r\n\r\n") and body.count(b"\r\n10000\r\n") == 99
    assert render.made == 100 and not server.peers
    server.close()


def test_a_reader_that_stops_is_dropped_after_the_write_timeout(
    clock: Clock, selector: selectors.DefaultSelector
) -> None:
    render = Exposition(1000)
    server, address = endpoint(selector, render)
    sock = connect(address, selector)
    sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    pump(selector)
    (peer,) = server.peers.values()
    assert peer.phase is Phase.WRITING and render.made < 100  # the socket took what it could
    clock.now += server.WRITE_TIMEOUT
    server.expire(clock.now)
    assert not server.peers and peer.rest is None  # the rest is never made
    sock.close()
    server.close()


def test_the_teardown_closes_every_peer_even_after_the_selector_closed() -> None:
    """A peer left registered with a closed selector still has its socket closed."""
    selector = selectors.DefaultSelector()
    server, address = endpoint(selector)
    sock = connect(address, selector)
    (peer,) = server.peers.values()
    selector.close()
    server.close()
    assert peer.sock.fileno() == -1 and server.listener.fileno() == -1
    sock.close()


def test_peers_closed_for_what_they_did_are_logged_once_a_minute_per_reason(
    clock: Clock, selector: selectors.DefaultSelector, caplog: pytest.LogCaptureFixture
) -> None:
    """One line says why at once; a flood of the same only counts until the next line."""
    server, address = endpoint(selector)

    def drip() -> socket.socket:
        sock = connect(address, selector)
        sock.sendall(b"GET")
        pump(selector)
        return sock

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    why = "metrics endpoint: closed a connection that sent no whole request within 5s of its "
    socks = [drip()]
    clock.now += server.REQUEST_TIMEOUT
    server.expire(clock.now)
    assert warnings() == [why + "first byte"]
    for _ in range(3):
        socks.append(drip())
        clock.now += server.REQUEST_TIMEOUT
        server.expire(clock.now)
    assert len(warnings()) == 1
    clock.now += 60
    socks.append(drip())
    clock.now += server.REQUEST_TIMEOUT
    server.expire(clock.now)
    assert warnings()[1:] == [why + "first byte (3 more since the last such line)"]
    idle = connect(address, selector)  # an idle peer's end is no complaint
    clock.now += server.IDLE_TIMEOUT
    server.expire(clock.now)
    assert len(warnings()) == 2 and not server.peers
    for sock in [*socks, idle]:
        sock.close()
    server.close()


def test_what_a_full_house_and_an_overlong_request_log(
    tmp_path: Path,
    clock: Clock,
    selector: selectors.DefaultSelector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, _, path = control(tmp_path, selector)
    socks = [client(path) for _ in range(SideServer.MAX_PEERS + 1)]
    pump(selector)
    for part in (b"x" * server.MAX_INPUT, b"x"):
        socks[-1].sendall(part)
        for _ in range(4):
            pump(selector)
    socks.append(client(path))  # the first was closed for the 17th, the 17th for its line
    for sock in socks[1:-2] + socks[-1:]:
        sock.sendall(b'{"v":1,"cmd":"reload","wait":true}\n')
        pump(selector)
    late = client(path)
    pump(selector)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "control socket: closed a connection that waited when a new one came to a full house",
        "control socket: closed a connection that sent a request of more than 65536 bytes",
        "control socket: closed a connection that came while 16 waited for answers",
    ]
    for sock in [*socks, late]:
        sock.close()
    server.close()


def test_a_reader_that_stops_is_logged(
    clock: Clock, selector: selectors.DefaultSelector, caplog: pytest.LogCaptureFixture
) -> None:
    server, address = endpoint(selector, Exposition(1000))
    sock = connect(address, selector)
    sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    pump(selector)
    clock.now += server.WRITE_TIMEOUT
    server.expire(clock.now)
    assert caplog.messages == [
        "metrics endpoint: closed a connection that read nothing of its answer for 10s"
    ]
    sock.close()
    server.close()

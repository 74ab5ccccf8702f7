"""The control socket's protocol and the master's small servers (control, metrics), in one
process: real sockets, a selector pumped by hand, no fork."""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefork.core._events import (
    DrainRequested,
    ReloadRequested,
    ResumeRequested,
    ScaleRequested,
    StopRequested,
)
from prefork.core._options import ConfigError
from prefork.core._payloads import BrokerStatus
from prefork.master._sockets import bind_private as bind
from prefork.ops import _control_protocol as protocol
from prefork.ops._control import ControlServer
from prefork.ops._metrics_http import MetricsEndpoint, answer
from prefork.ops._side import Peer, SideServer

# --- the protocol --------------------------------------------------------------------------


def parse(obj: Any) -> protocol.Request:
    return protocol.parse(json.dumps(obj).encode(), ["http", "jobs"])


def test_requests_are_parsed_into_commands_and_events() -> None:
    assert parse({"v": 1, "cmd": "status"}) == protocol.Request("status")
    reload = parse({"v": 1, "cmd": "reload", "broker": "http", "wait": True})
    assert reload == protocol.Request("reload", "http", wait=True)
    assert protocol.event_for(reload) == ReloadRequested("http")
    assert protocol.event_for(parse({"v": 1, "cmd": "drain"})) == DrainRequested(None)
    assert protocol.event_for(parse({"v": 1, "cmd": "resume", "broker": None})) == (
        ResumeRequested(None)
    )
    scale = parse({"v": 1, "cmd": "scale", "broker": "jobs", "workers": 3})
    assert protocol.event_for(scale) == ScaleRequested("jobs", workers=3)
    assert protocol.event_for(parse({"v": 1, "cmd": "stop"})) == StopRequested()
    assert protocol.event_for(parse({"v": 1, "cmd": "status"})) is None
    # with one broker, scale may leave it out
    one = protocol.parse(b'{"v":1,"cmd":"scale","workers":0}', ["http"])
    assert one == protocol.Request("scale", "http", workers=0)
    # an upgrade is the master's own doing: no supervisor event
    upgrade = parse({"v": 1, "cmd": "upgrade", "wait": True})
    assert upgrade == protocol.Request("upgrade", wait=True)
    assert protocol.event_for(upgrade) is None
    assert parse({"v": 1, "cmd": "upgrade"}) == protocol.Request("upgrade")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"not json", "a request is one JSON object per line"),
        (b"\xff\xfe", "a request is one JSON object per line"),
        (b"[1, 2]", "a request is one JSON object per line"),
        (b'{"cmd": "status"}', "protocol version None is not supported; this master speaks 1"),
        (b'{"v": 2, "cmd": "status"}', "protocol version 2 is not supported"),
        (b'{"v": 1, "cmd": "restart"}', "unknown command 'restart'; commands: status, reload"),
        (
            b'{"v": 1, "cmd": "drain", "broker": "web"}',
            "no broker named 'web'; brokers: http, jobs",
        ),
        (b'{"v": 1, "cmd": "scale", "workers": 2}', "scale needs a broker: http, jobs"),
        (
            b'{"v": 1, "cmd": "upgrade", "broker": "http"}',
            "upgrade takes no broker: the whole master is upgraded",
        ),
        (b'{"v": 1, "cmd": "scale", "broker": "http"}', "scale needs workers, a whole number"),
        (b'{"v": 1, "cmd": "scale", "broker": "http", "workers": -1}', "got -1"),
        (b'{"v": 1, "cmd": "scale", "broker": "http", "workers": true}', "got True"),
        (b'{"v": 1, "cmd": "scale", "broker": "http", "workers": 1.5}', "got 1.5"),
        (b'{"v":1,"cmd":"scale","broker":"http","workers":1025}', "from 0 to 1024, got 1025"),
        (b'{"v":1,"cmd":"scale","broker":"http","workers":' + b"9" * 4300 + b"}", "got 9999"),
        # What json.loads raises beside JSONDecodeError (RecursionError, ValueError):
        (b"[" * 1000 + b"]" * 1000, "one JSON object per line (JSON nested more than 64"),
        (b'{"v":1,"cmd":"status","x":' + b"9" * 4301 + b"}", "more than 4300 digits"),
        (b'{"v":1,"cmd":"status","x":' + b'{"a":' * 3000 + b"1" + b"}" * 3001, "nested"),
        (b'{"v":1,"cmd":"status","x":' + b"[" * 64 + b"]" * 64 + b"}", "nested"),
    ],
)
def test_bad_requests_are_refused_in_one_line(line: bytes, error: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=re.escape(error)):
        protocol.parse(line, ["http", "jobs"])


def test_answers_are_one_json_line_with_the_version() -> None:
    assert protocol.answer() == b'{"v":1,"ok":true}\n'
    assert json.loads(protocol.refusal("no", reloads=[])) == {
        "v": 1,
        "ok": False,
        "error": "no",
        "reloads": [],
    }


def broker(generation: int, last: dict[str, Any] | None, draining: bool = False) -> BrokerStatus:
    return {"generation": generation, "last_reload": last, "draining": draining}  # type: ignore[typeddict-item]


def last(generation: int, result: str, reason: str = "") -> dict[str, Any]:
    return {
        "generation": generation,
        "result": result,
        "reason": reason,
        "replaced": 2,
        "duration": 1.23456,
        "ago": 3.0,
    }


def test_a_reload_wait_settles_when_every_broker_is_done() -> None:
    wait = protocol.ReloadWait.of({"http": broker(1, None), "jobs": broker(4, None)}, None)
    assert wait.since == {"http": 1, "jobs": 4}
    running = {"http": broker(2, last(2, "done")), "jobs": broker(5, last(5, "running"))}
    assert wait.settle(running) is None
    done = {"http": broker(2, last(2, "done")), "jobs": broker(5, last(5, "done"))}
    reply = json.loads(wait.settle(done) or b"")
    assert reply["ok"] is True
    assert reply["reloads"][1] == {
        "broker": "jobs",
        "generation": 5,
        "result": "done",
        "reason": "",
        "replaced": 2,
        "duration": 1.235,
    }


def test_a_reload_wait_fails_when_rolled_back_or_never_started() -> None:
    wait = protocol.ReloadWait.of({"http": broker(1, None), "jobs": broker(1, None)}, "http")
    assert wait.since == {"http": 1}
    failed = {"http": broker(2, last(2, "failed", "worker 3 exited with code 1"))}
    reply = json.loads(wait.settle(failed) or b"")
    assert reply["ok"] is False
    assert reply["error"] == "the reload of http was rolled back: worker 3 exited with code 1"
    assert reply["reloads"][0]["result"] == "failed"
    draining = {"http": broker(1, None, draining=True)}
    reply = json.loads(wait.settle(draining) or b"")
    assert reply["error"] == "the reload of http did not start: it is draining"
    stopped = {"http": broker(1, last(1, "done"))}  # an older reload's record
    reply = json.loads(wait.settle(stopped) or b"")
    assert reply["error"] == "the reload of http did not start: the master is stopping"


def test_an_upgrade_wait_answers_as_a_reload_wait_with_what_the_upgrade_did() -> None:
    upgrade = {"pid": 7, "from": "0.1.0", "to": "0.2.0", "upgrades": 1, "took": 1.5}
    wait = protocol.ReloadWait.of({"http": broker(1, None)}, None, upgrade=upgrade)
    reply = json.loads(wait.settle({"http": broker(2, last(2, "done"))}) or b"")
    assert (reply["ok"], reply["upgrade"], len(reply["reloads"])) == (True, upgrade, 1)
    reply = json.loads(wait.settle({"http": broker(2, last(2, "failed", "no"))}) or b"")
    assert (reply["ok"], reply["upgrade"]) == (False, upgrade)
    assert reply["error"] == "the reload of http was rolled back: no"


# --- the servers, over real sockets -------------------------------------------------------


@pytest.fixture
def selector() -> Iterator[selectors.DefaultSelector]:
    with selectors.DefaultSelector() as sel:
        yield sel


def pump(sel: selectors.BaseSelector, rounds: int = 20) -> None:
    """Run the selector's ready callbacks until nothing is ready (a few rounds)."""
    for _ in range(rounds):
        ready = sel.select(0.01)
        if not ready:
            return
        for key, mask in ready:
            key.data.ready(key.fileobj, mask)


def client(path: str | Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.settimeout(2)
    return sock


_unread: dict[socket.socket, bytes] = {}


def read_line(sel: selectors.BaseSelector, sock: socket.socket) -> dict[str, Any]:
    """The next answer line on ``sock`` (what came after it is kept for the next call)."""
    data = _unread.pop(sock, b"")
    deadline = time.monotonic() + 2
    while b"\n" not in data and time.monotonic() < deadline:
        pump(sel)
        sock.setblocking(False)
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            continue
        finally:
            sock.setblocking(True)
        if not chunk:
            break
        data += chunk
    line, _, rest = data.partition(b"\n")
    _unread[sock] = rest
    return json.loads(line)  # type: ignore[no-any-return]


def closed(sel: selectors.BaseSelector, sock: socket.socket) -> bool:
    pump(sel)
    sock.settimeout(1)
    try:
        while chunk := sock.recv(65536):
            del chunk
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


class Recorder:
    """A handler that records requests; ``hold`` makes reloads wait for ``answer``."""

    def __init__(self) -> None:
        self.requests: list[protocol.Request] = []
        self.held: list[Peer] = []

    def __call__(self, peer: Peer, request: protocol.Request) -> bytes | None:
        self.requests.append(request)
        if request.wait:
            self.held.append(peer)
            return None
        return protocol.answer(cmd=request.cmd)


def control(
    tmp_path: Path, sel: selectors.BaseSelector, **kw: Any
) -> tuple[ControlServer, Recorder, Path]:
    path = tmp_path / "m.ctl"
    handler = Recorder()
    server = ControlServer(bind(str(path)), sel, handler, ["http"], **kw)
    return server, handler, path


def test_the_socket_is_private_from_the_start_and_removed_on_close(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, _, path = control(tmp_path, selector)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.umask(0o022) == 0o022  # bind put the umask back
    server.close()
    assert not path.exists()


def test_a_socket_replaced_by_another_master_is_not_removed(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, _, path = control(tmp_path, selector)
    os.unlink(path)
    other = bind(str(path))  # someone else's now
    server.close()
    assert path.exists()
    other.close()


def test_a_live_socket_is_not_taken_over_and_a_stale_one_is(tmp_path: Path) -> None:
    path = tmp_path / "m.ctl"
    live = bind(str(path))
    with pytest.raises(ConfigError, match="a running server answers on it"):
        bind(str(path))
    live.close()  # the file stays: stale
    bind(str(path)).close()


def test_requests_are_answered_in_order_on_one_connection(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, handler, path = control(tmp_path, selector)
    sock = client(path)
    sock.sendall(b'{"v":1,"cmd":"status"}\n{"v":1,"cmd":"drain"}\n{"v":1,"cmd":"nope"}\n')
    answers = b""
    while answers.count(b"\n") < 3:
        pump(selector)
        answers += sock.recv(65536)
    first, second, third = (json.loads(line) for line in answers.splitlines())
    assert (first["cmd"], second["cmd"]) == ("status", "drain")
    assert third["error"].startswith("unknown command 'nope'")
    assert [r.cmd for r in handler.requests] == ["status", "drain"]
    server.close()


def test_a_held_request_holds_the_ones_after_it(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, handler, path = control(tmp_path, selector)
    sock = client(path)
    sock.sendall(b'{"v":1,"cmd":"reload","wait":true}\n{"v":1,"cmd":"status"}\n')
    pump(selector)
    assert [r.cmd for r in handler.requests] == ["reload"]
    assert server.deadline() is None  # no idle timeout while it waits
    (peer,) = handler.held
    server.answer(peer, protocol.answer(reloads=[]))
    assert read_line(selector, sock) == {"v": 1, "ok": True, "reloads": []}
    assert read_line(selector, sock)["cmd"] == "status"
    assert server.deadline() is not None
    server.close()


def test_an_answer_for_a_client_that_left_goes_nowhere(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, handler, path = control(tmp_path, selector)
    sock = client(path)
    sock.sendall(b'{"v":1,"cmd":"reload","wait":true}\n')
    pump(selector)
    sock.close()
    pump(selector)
    assert not server.peers
    server.answer(handler.held[0], protocol.answer())  # nothing raises
    server.close()


def test_a_line_over_the_limit_is_refused_and_closed(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, handler, path = control(tmp_path, selector)
    sock = client(path)
    sock.sendall(b"x" * (ControlServer.MAX_INPUT + 10))
    assert read_line(selector, sock)["error"] == "a request line is at most 65536 bytes"
    assert closed(selector, sock)
    assert handler.requests == []
    server.close()


def test_a_client_that_asks_and_never_reads_is_dropped(
    tmp_path: Path, selector: selectors.DefaultSelector, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _handler, path = control(tmp_path, selector)
    monkeypatch.setattr(ControlServer, "MAX_OUTPUT", 1000)
    big = protocol.answer(pad="x" * 600)
    server._handler = lambda peer, request: big
    sock = client(path)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b'{"v":1,"cmd":"status"}\n' * 2000)
    for _ in range(50):
        pump(selector)
        if not server.peers:
            break
    assert not server.peers
    server.close()


def test_another_users_connection_is_refused(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, handler, path = control(tmp_path, selector, uids=[os.geteuid() + 12345])
    sock = client(path)
    reply = read_line(selector, sock)
    assert reply["ok"] is False
    assert reply["error"] == (
        f"refused: uid {os.geteuid()} may not control this master (its user's and root's only)"
    )
    assert closed(selector, sock)
    assert handler.requests == []
    server.close()


def test_idle_connections_are_closed_at_their_deadline(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, _, path = control(tmp_path, selector)
    sock = client(path)
    pump(selector)
    deadline = server.deadline()
    assert deadline is not None
    server.expire(deadline - 1)
    assert server.peers
    server.expire(deadline)
    assert not server.peers and closed(selector, sock)
    server.close()


def test_a_full_house_of_held_peers_turns_a_new_connection_away(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    """Held peers (reload --wait) were taken: none gives way to a newcomer."""
    server, handler, path = control(tmp_path, selector)
    held = [client(path) for _ in range(SideServer.MAX_PEERS)]
    for sock in held:
        sock.sendall(b'{"v":1,"cmd":"reload","wait":true}\n')
    pump(selector)
    assert len(handler.held) == SideServer.MAX_PEERS
    extra = client(path)
    assert closed(selector, extra)
    assert len(server.peers) == SideServer.MAX_PEERS
    assert len(server.fds()) == SideServer.MAX_PEERS + 1
    for sock in held:
        sock.close()
    server.close()


def test_a_peer_that_resets_is_dropped(tmp_path: Path, selector: selectors.DefaultSelector) -> None:
    server, _, path = control(tmp_path, selector)
    sock = client(path)
    pump(selector)
    (peer,) = server.peers.values()
    sock.close()
    server.send(peer, b"x" * 300000)  # the write fails: dropped
    pump(selector)
    assert not server.peers
    server.ready(peer.sock, selectors.EVENT_READ)  # a stale readiness: nothing happens
    server.close()


def test_accept_with_nobody_waiting_does_nothing(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, _, _ = control(tmp_path, selector)
    server.ready(server.listener, selectors.EVENT_READ)
    assert not server.peers
    server.close()


# --- the metrics endpoint -----------------------------------------------------------------


def render() -> list[str]:
    return ["# TYPE x counter\n", "", "x 1\n"]


def whole(head: bytes, render: Any = render) -> bytes:
    """The whole response ``answer`` makes for ``head``: its first bytes and the rest."""
    first, rest = answer(head, render, dict)
    return first + b"".join(rest or ())


@pytest.mark.parametrize(
    ("head", "start"),
    [
        (
            b"GET /metrics HTTP/1.1\r\nHost: x",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4",
        ),
        (b"GET /metrics?x=1 HTTP/1.0", b"HTTP/1.1 200 OK"),
        (b"GET / HTTP/1.1", b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8"),
        (b"GET /other HTTP/1.1", b"HTTP/1.1 404 Not Found"),
        (b"POST /metrics HTTP/1.1", b"HTTP/1.1 405 Method Not Allowed"),
        (b"GET /metrics", b"HTTP/1.1 400 Bad Request"),
        (b"\x00\x01", b"HTTP/1.1 400 Bad Request"),
    ],
)
def test_the_endpoint_answers_what_a_scraper_sends(head: bytes, start: bytes) -> None:
    reply = whole(head)
    assert reply.startswith(start)
    assert b"connection: close\r\n\r\n" in reply


def test_metrics_body_and_head_request() -> None:
    """The exposition is chunked, a piece per chunk (an empty piece would end the body);
    HTTP/1.0 reads it to the close; HEAD gets the head alone."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n"
    assert whole(b"GET /metrics HTTP/1.1") == head + (
        b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        b"11\r\n# TYPE x counter\n\r\n4\r\nx 1\n\r\n0\r\n\r\n"
    )
    assert whole(b"GET /metrics HTTP/1.0") == head + (
        b"connection: close\r\n\r\n# TYPE x counter\nx 1\n"
    )
    assert whole(b"HEAD /metrics HTTP/1.1") == head + (
        b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    assert whole(b"HEAD / HTTP/1.1").endswith(b"content-length: 47\r\nconnection: close\r\n\r\n")


def endpoint(selector: selectors.BaseSelector) -> tuple[MetricsEndpoint, tuple[str, int]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return MetricsEndpoint(listener, selector, render, dict), listener.getsockname()


def fetch(selector: selectors.BaseSelector, address: tuple[str, int], *parts: bytes) -> bytes:
    sock = socket.create_connection(address, timeout=2)
    for part in parts:
        sock.sendall(part)
        pump(selector)
    data = b""
    while True:
        pump(selector)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    sock.close()
    return data


def test_the_endpoint_serves_a_scrape_split_across_reads(
    selector: selectors.DefaultSelector,
) -> None:
    server, address = endpoint(selector)
    reply = fetch(selector, address, b"GET /met", b"rics HTTP/1.1\r\n", b"Host: a\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"x 1\n\r\n0\r\n\r\n")
    reply = fetch(selector, address, b"GET /metrics HTTP/1.0\n\n")  # bare newlines too
    assert reply.startswith(b"HTTP/1.1 200 OK")
    server.close()


def test_a_head_too_large_gets_431_and_a_close(selector: selectors.DefaultSelector) -> None:
    server, address = endpoint(selector)
    reply = fetch(selector, address, b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 2000)
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert not server.peers
    server.close()


def test_a_slow_reader_gets_its_whole_answer_as_it_reads(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, _handler, path = control(tmp_path, selector)
    big = protocol.answer(pad="x" * 500_000)
    server._handler = lambda peer, request: big
    sock = client(path)
    sock.sendall(b'{"v":1,"cmd":"status"}\n')
    pump(selector)
    (peer,) = server.peers.values()
    assert peer.output  # the socket took part of it; the rest waits for EVENT_WRITE
    data = b""
    while not data.endswith(b"\n"):
        data += sock.recv(65536)
        pump(selector)
    assert json.loads(data)["pad"] == "x" * 500_000 and not peer.output
    server.close()


def test_a_held_peer_may_send_more_and_keeps_no_deadline(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, _handler, path = control(tmp_path, selector)
    sock = client(path)
    sock.sendall(b'{"v":1,"cmd":"reload","wait":true}\n')
    pump(selector)
    sock.sendall(b'{"v":1,"cmd":"status"}\n')
    pump(selector)
    (peer,) = server.peers.values()
    assert server.deadline_of(peer) is None and server.deadline() is None
    assert peer.input == b'{"v":1,"cmd":"status"}\n'
    server.close()


def test_a_closing_peer_is_not_read_and_a_reset_drops_it(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, handler, path = control(tmp_path, selector)
    sock = client(path)
    pump(selector)
    (peer,) = server.peers.values()
    peer.closing = True  # answered, its last bytes not written yet
    sock.sendall(b'{"v":1,"cmd":"status"}\n')
    pump(selector)
    assert peer.input == b"" and handler.requests == []
    server.ready(peer.sock, selectors.EVENT_READ)  # nothing left to read: nothing happens
    assert server.peers
    server.close()


def test_a_client_that_resets_is_dropped(selector: selectors.DefaultSelector) -> None:
    server, address = endpoint(selector)
    sock = socket.create_connection(address)
    pump(selector)
    assert server.peers
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset: recv() raises on our side
    pump(selector)
    assert not server.peers
    server.close()


def test_a_request_sent_one_byte_at_a_time_is_answered_once(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    server, handler, path = control(tmp_path, selector)
    sock = client(path)
    for byte in b'{"v":1,"cmd":"scale","workers":2}\n':
        sock.sendall(bytes([byte]))
        pump(selector)
    assert read_line(selector, sock)["cmd"] == "scale"
    assert handler.requests == [protocol.Request("scale", "http", workers=2)]
    server.close()

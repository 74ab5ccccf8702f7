"""`prefork serve` with WebSockets, end to end: a real master, the ``websockets`` library as an
independent client, and raw sockets where the client must misbehave.

A reload closes an open WebSocket with 1012 and a drain or stop with 1001 (never just drops
it); ``wss://`` over ``--ssl-certfile``; ``--limit-concurrency``, ``--ws none``, pings that go
unanswered, handshakes the app refuses, and ``--ws-max-size``. The app
(``serve_apps/ws_apps.py``) writes what it saw to the file in ``WS_APP_EVENTS``.
"""

from __future__ import annotations

import base64
import http.client
import inspect
import logging
import os
import signal
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from helpers import MasterProcess, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.timeout(60)

SERVE_APPS = Path(__file__).parent / "serve_apps"
# websockets 17.1 deprecated calling connect() outside a `with` unless legacy=True is passed
# (which older versions, allowed by the test extra, do not know).
LEGACY = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
Start = Callable[..., MasterProcess]

# --- starting a server and talking to it ----------------------------------------------------


def serve(
    start: Start, sock: socket.socket, tmp_path: Path, *options: str, graceful: float = 5.0
) -> tuple[MasterProcess, Path]:
    """One worker serving ``ws_apps:app``; returns the master and the app's events file."""
    events = tmp_path / "ws_events.txt"
    argv = [sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
    argv += ["--app-dir", str(SERVE_APPS), "--workers", "1"]
    argv += ["--graceful-timeout", str(graceful), *options, "ws_apps:app"]
    return start(argv, pass_fds=[sock], env={"WS_APP_EVENTS": str(events)}), events


def app_events(events: Path) -> list[str]:
    return events.read_text().splitlines() if events.exists() else []


def open_ws(url: str, **options: Any) -> ClientConnection:
    """A ``websockets`` client connection (no proxy, no pings of its own)."""
    options = {"open_timeout": 5, "close_timeout": 5, "ping_interval": None, **options}
    return connect(url, proxy=None, **LEGACY, **options)


def wait_ws(master: MasterProcess, url: str, **options: Any) -> ClientConnection:
    """The first WebSocket a worker accepts: the worker may still be booting, and a drained
    master turns a connection away (a 503, or a reset when the request came first)."""
    errors: list[Exception] = []

    def attempt() -> ClientConnection | None:
        master.check_running(f"a WebSocket to {url}")
        try:
            return open_ws(url, **options)
        # websockets' own asserts can fail when a connection is reset mid-handshake (as a
        # drained master does): one more failed attempt, not the test's verdict.
        except (OSError, TimeoutError, InvalidStatus, ConnectionClosed, AssertionError) as exc:
            errors.append(exc)
            return None

    try:
        return wait_until(attempt, 15, f"a WebSocket to {url}")
    except AssertionError as exc:
        log = master.stderr()[-2000:]
        raise AssertionError(f"{exc}; attempts: {errors!r}\nstderr:\n{log}") from None


def echo(ws: ClientConnection, message: str | bytes) -> str | bytes:
    ws.send(message)
    return ws.recv(timeout=5)


def whoami(ws: ClientConnection) -> tuple[int, str]:
    """The pid of the worker serving ``ws`` and its scope's scheme."""
    pid, scheme = str(echo(ws, "whoami")).split()
    return int(pid), scheme


def close_frame(ws: ClientConnection, timeout: float = 15.0) -> Close:
    """Wait for the server to close ``ws``; the close frame it sent (an abrupt close fails)."""
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=timeout)
    assert closed.value.rcvd is not None, f"closed without a close frame: {closed.value!r}"
    return closed.value.rcvd


def refused(url: str) -> Any:
    """The HTTP response of a handshake the server refuses."""
    with pytest.raises(InvalidStatus) as refusal:
        open_ws(url).close()
    return refusal.value.response


# --- a raw client -----------------------------------------------------------------------------


def raw_handshake(port: int, path: str = "/") -> tuple[socket.socket, bytes, bytes]:
    """A socket that sent a handshake request: (socket, response head, bytes after it)."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16))
    conn.sendall(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        assert chunk, f"closed before a whole response head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return conn, head, rest


def read_to_eof(conn: socket.socket, data: bytes = b"") -> bytes:
    while chunk := conn.recv(4096):
        data += chunk
    return data


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked frame in ``data`` (a server's frames)."""
    frames = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            start = 4
        elif length == 127:
            (length,) = struct.unpack("!Q", data[2:10])
            start = 10
        assert not data[1] & 0x80, "a server frame must not be masked"
        frames.append((opcode, data[start : start + length]))
        data = data[start + length :]
    return frames


PING, CLOSE = 0x9, 0x8


# --- reload, drain, stop ----------------------------------------------------------------------


def test_a_reload_closes_websockets_with_1012_and_the_new_generation_echoes(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/"
    master, events = serve(start, sock, tmp_path)
    ws = wait_ws(master, url)
    old, scheme = whoami(ws)
    assert scheme == "ws"
    assert echo(ws, "before the reload") == "before the reload"
    master.signal(signal.SIGHUP)
    close = close_frame(ws)  # sent once the new worker is ready and the old one drains
    assert (close.code, close.reason) == (1012, "server restarting")
    wait_until(lambda: f"disconnect {old} 1012" in app_events(events), 5, "the app told 1012")
    with open_ws(url) as ws:
        new, _ = whoami(ws)
        assert new != old
        assert echo(ws, b"after the reload") == b"after the reload"
    told = [line for line in app_events(events) if line.startswith(f"disconnect {old} ")]
    assert told == [f"disconnect {old} 1012"]


@pytest.mark.parametrize(
    ("signum", "options"),
    [(signal.SIGINT, ()), (signal.SIGTERM, ("--sigterm", "stop"))],
    ids=["SIGINT", "SIGTERM-stop"],
)
def test_a_stop_closes_websockets_with_1001_and_the_master_exits_soon(
    start: Start, sock: socket.socket, tmp_path: Path, signum: int, options: tuple[str, ...]
) -> None:
    """The worker leaves as soon as its sockets closed, far before the graceful timeout (an
    open WebSocket left to its deadline would hold it 8 of the 10 seconds)."""
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/"
    master, events = serve(start, sock, tmp_path, *options, graceful=10.0)
    ws = wait_ws(master, url)
    pid, _ = whoami(ws)
    began = time.monotonic()
    master.signal(signum)
    close = close_frame(ws)
    assert (close.code, close.reason) == (1001, "server going away")
    assert master.wait_exit(10) == 0
    assert time.monotonic() - began < 4.0
    assert f"disconnect {pid} 1001" in app_events(events)


def test_a_drain_closes_websockets_with_1001_and_the_worker_leaves(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    """SIGTERM drains (the master stays): the worker closes its WebSocket with 1001 and
    leaves well before the graceful timeout; SIGUSR2 serves WebSockets again."""
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/"
    master, events = serve(start, sock, tmp_path, graceful=10.0)
    ws = wait_ws(master, url)
    pid, _ = whoami(ws)
    began = time.monotonic()
    master.signal(signal.SIGTERM)
    close = close_frame(ws)
    assert (close.code, close.reason) == (1001, "server going away")
    wait_until(lambda: not master.workers(), 4, "the drained worker to leave")
    assert time.monotonic() - began < 4.0
    assert f"disconnect {pid} 1001" in app_events(events)
    master.check_running("the drain")
    master.signal(signal.SIGUSR2)
    with wait_ws(master, url) as ws:
        assert whoami(ws)[0] != pid


# --- TLS and the HTTP options ------------------------------------------------------------------


def test_wss_echoes_and_the_scope_scheme_is_wss(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    url = f"wss://127.0.0.1:{sock.getsockname()[1]}/tls"
    tls = ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)]
    master, events = serve(start, sock, tmp_path, *tls)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with wait_ws(master, url, ssl=context) as ws:
        pid, scheme = whoami(ws)
        assert scheme == "wss"
        assert echo(ws, "over TLS") == "over TLS"
        assert echo(ws, b"\x00\xff" * 5000) == b"\x00\xff" * 5000
    assert f"connect {pid} wss /tls" in app_events(events)


def test_limit_concurrency_refuses_a_second_websocket_with_503(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/"
    master, _ = serve(start, sock, tmp_path, "--limit-concurrency", "1")
    first = wait_ws(master, url)
    assert echo(first, "one") == "one"
    assert refused(url).status_code == 503
    assert echo(first, "still open") == "still open"
    first.close()
    with wait_ws(master, url) as second:  # room again once the first one closed
        assert echo(second, "two") == "two"


def test_ws_none_passes_an_upgrade_request_to_the_app_as_http(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    master, events = serve(start, sock, tmp_path, "--ws", "none")

    def answer() -> tuple[int, bytes] | None:
        master.check_running("an answer")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        headers = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
        }
        try:
            conn.request("GET", "/chat", headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except OSError:
            return None
        finally:
            conn.close()

    assert wait_until(answer, 15, "an answer") == (200, b"http GET /chat upgrade=websocket")
    assert app_events(events) == []  # no websocket scope reached the app


# --- pings --------------------------------------------------------------------------------------


class PingCounter(logging.Handler):
    """Counts the pings a ``websockets`` client received (it logs each frame at DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.pings = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("< PING"):
            self.pings += 1


def test_a_client_that_never_answers_pings_is_closed_with_1011(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    pings = ["--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3"]
    master, events = serve(start, sock, tmp_path, *pings)
    counter = PingCounter()
    logger = logging.getLogger(f"{__name__}.client")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(counter)
    try:
        good = wait_ws(master, f"ws://127.0.0.1:{port}/", logger=logger)
        wait_until(lambda: counter.pings >= 1, 5, "a first ping answered")
        mute, head, rest = raw_handshake(port)
        assert head.startswith(b"HTTP/1.1 101 "), head
        began = time.monotonic()
        frames = server_frames(read_to_eof(mute, rest))  # never answers: the server closes
        assert time.monotonic() - began < 3.0
        mute.close()
        assert PING in [opcode for opcode, _ in frames]
        opcode, payload = frames[-1]
        assert opcode == CLOSE
        assert struct.unpack("!H", payload[:2])[0] == 1011
        assert payload[2:] == b"keepalive ping timeout"
        # The client that answers stays open well past the time the mute one had.
        seen = counter.pings
        wait_until(lambda: counter.pings >= seen + 4, 5, "four more pings answered")
        assert echo(good, "still here") == "still here"
        good.close()
    finally:
        logger.removeHandler(counter)
    lines = app_events(events)
    assert sum(line.endswith(" 1011") for line in lines) == 1  # the mute one only
    assert sum(line.startswith("connect ") for line in lines) == 2


# --- refused handshakes ---------------------------------------------------------------------------


def test_an_app_closing_before_accept_gives_403_and_a_denial_response_its_status_and_body(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    master, events = serve(start, sock, tmp_path)
    wait_ws(master, f"ws://127.0.0.1:{port}/").close()
    assert refused(f"ws://127.0.0.1:{port}/refuse").status_code == 403
    denial = refused(f"ws://127.0.0.1:{port}/deny")
    assert denial.status_code == 401
    assert denial.headers["content-type"] == "text/plain"
    assert denial.body == b"no entry without a token\n"
    # The same, read raw: the whole response, then the server closes the connection.
    conn, head, rest = raw_handshake(port, "/deny")
    with conn:
        body = read_to_eof(conn, rest)
    assert head.startswith(b"HTTP/1.1 401 "), head
    assert body.endswith(b"no entry without a token\n")
    lines = app_events(events)
    assert sum(line.endswith(" /refuse") for line in lines) == 1  # the app refused, not we
    assert sum(line.endswith(" /deny") for line in lines) == 2


# --- message size ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_a_message_over_ws_max_size_is_closed_with_1009(
    start: Start, sock: socket.socket, tmp_path: Path, compression: str | None
) -> None:
    """Also when per-message deflate packs it into a few bytes: its inflated size counts
    (``BoundedDeflate`` stops inflating past the limit)."""
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/"
    master, events = serve(start, sock, tmp_path, "--ws-max-size", "1000")
    ws = wait_ws(master, url, compression=compression)
    assert bool(ws.protocol.extensions) == (compression is not None)
    pid, _ = whoami(ws)
    assert echo(ws, b"x" * 1000) == b"x" * 1000  # the limit itself is allowed
    ws.send(b"x" * 2000)
    assert close_frame(ws, timeout=5).code == 1009
    wait_until(lambda: f"disconnect {pid} 1009" in app_events(events), 5, "the app told 1009")

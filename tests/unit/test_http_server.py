"""HTTPWorker on real sockets (127.0.0.1, port 0) with http.client in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import logging
import os
import socket
import struct
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import uvloop

from prefork.http import (
    AppImportError,
    ClientDisconnected,
    HTTPConfig,
    HTTPWorker,
    LifespanFailure,
)
from prefork.http._app import import_app
from prefork.worker import Board

_names = itertools.count()

APP_SOURCE = """
import asyncio

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = b"hi from lifespan"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/slow":
        await asyncio.sleep(0.2)
    if scope["path"] == "/server":
        body = repr(scope["server"]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["state"]["greeting"] + b" " + body})

def make():
    return app

not_callable = 3
"""


HELLO_SOURCE = """
async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})
"""


class Channel:
    def __init__(self) -> None:
        self.frames: list[tuple[str, Any]] = []

    def send_frame(self, kind: str, body: Any = None) -> None:
        self.frames.append((kind, body))


def write_module(tmp_path: Path, source: str = APP_SOURCE) -> str:
    name = f"prefork_test_app_{os.getpid()}_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def listener(family: int = socket.AF_INET, path: str | None = None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(path if path else ("127.0.0.1", 0))
    sock.listen(16)
    return sock


def make_worker(sock: socket.socket, **options: Any) -> tuple[HTTPWorker, Channel]:
    channel = Channel()
    worker = HTTPWorker(
        type="http", id=1, generation=1, sockets=[sock], options=options, channel=channel
    )
    return worker, channel


def get(port: int, requests: list[tuple[str, str, bytes | None]]) -> list[tuple[int, Any, bytes]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    for method, path, body in requests:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        out.append((response.status, response.headers, response.read()))
    conn.close()
    return out


def test_worker_serves_keep_alive_post_head_with_lifespan_state(tmp_path: Path) -> None:
    name = write_module(tmp_path)

    async def main() -> None:
        sock = listener()
        port = sock.getsockname()[1]
        worker, channel = make_worker(
            sock, app=f"{name}:make", factory=True, app_dir=str(tmp_path), max_requests=2
        )
        worker._exit = asyncio.get_running_loop().create_future()
        await worker.init()
        results = await asyncio.to_thread(
            get, port, [("GET", "/", None), ("POST", "/", b"abc"), ("HEAD", "/", None)]
        )
        assert [(s, b) for s, _, b in results] == [
            (200, b"hi from lifespan "),
            (200, b"hi from lifespan abc"),
            (200, b""),
        ]
        assert results[0][1]["server"] == "prefork"
        assert channel.frames == [("retire", None)]  # once, after 2 requests
        await worker.prepare_for_shutdown()
        assert worker._exit.result() == 0

    uvloop.run(main())


def test_drain_answers_in_flight_with_close_then_exits(tmp_path: Path) -> None:
    name = write_module(tmp_path)

    async def main() -> None:
        sock = listener()
        port = sock.getsockname()[1]
        worker, _ = make_worker(sock, app=f"{name}:app", app_dir=str(tmp_path))
        worker._exit = asyncio.get_running_loop().create_future()
        await worker.init()
        assert worker.state is not None
        slow = asyncio.ensure_future(asyncio.to_thread(get, port, [("GET", "/slow", None)]))
        while worker.state.inflight == 0:
            await asyncio.sleep(0.005)
        await worker.prepare_for_shutdown()
        [(status, headers, _body)] = await slow
        assert status == 200 and headers["connection"] == "close"
        assert worker._exit.result() == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

    uvloop.run(main())


def test_drain_answers_a_connection_accepted_in_the_loops_last_turn(tmp_path: Path) -> None:
    """A drain that begins right after an accept, before that connection's protocol exists,
    still answers its request: it waits for what was accepted, then drains it."""
    name = write_module(tmp_path, HELLO_SOURCE)

    async def main() -> None:
        sock = listener()
        port = sock.getsockname()[1]
        worker, _ = make_worker(sock, app=f"{name}:app", app_dir=str(tmp_path), lifespan="off")
        await worker.init()
        assert worker.state is not None and worker.share is not None
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        while not worker.share.pending:  # accepted, connection_made not run yet
            worker.servers[0]._ready()
            if not worker.share.pending:  # not queued yet: let the loop turn
                await asyncio.sleep(0)
        assert not worker.state.connections
        await worker.drain()
        client.setblocking(False)
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := client.recv(65536):
                data += chunk
        client.close()
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nhello")
        assert b"connection: close" in data and not worker.state.connections

    uvloop.run(main())


def test_unix_socket_scope(tmp_path: Path) -> None:
    name = write_module(tmp_path)
    path = str(tmp_path / "s.sock")

    async def main() -> None:
        sock = listener(socket.AF_UNIX, path)
        worker, _ = make_worker(sock, app=f"{name}:app", app_dir=str(tmp_path))
        await worker.init()

        def talk() -> bytes:
            with socket.socket(socket.AF_UNIX) as c:
                c.connect(path)
                c.sendall(b"GET /server HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := c.recv(65536):
                    data += chunk
                return data

        data = await asyncio.to_thread(talk)
        assert data.endswith(f"hi from lifespan ('{path}', None)".encode())
        await worker.drain()

    uvloop.run(main())


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"app": "prefork_no_such_module:app"}, AppImportError, "no module named"),
        ({"app": "{name}:nothing"}, AppImportError, "attribute 'nothing' not found in module"),
        (
            {"app": "{name}:not_callable"},
            AppImportError,
            r"is an int \(3\), not an ASGI or WSGI app",
        ),
        ({"app": "{broken}:app"}, ModuleNotFoundError, "prefork_missing_dependency"),
        ({"app": "{failing}:app", "lifespan": "on"}, LifespanFailure, "no database"),
    ],
)
def test_boot_failures_raise_and_log(
    tmp_path: Path, options: dict[str, Any], error: type[BaseException], words: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    names = {
        "name": write_module(tmp_path),
        "broken": write_module(tmp_path, "import prefork_missing_dependency\n"),
        "failing": write_module(
            tmp_path,
            """
            async def app(scope, receive, send):
                await receive()
                await send({"type": "lifespan.startup.failed", "message": "no database"})
            """,
        ),
    }
    options = {k: v.format(**names) for k, v in options.items()}

    async def main() -> None:
        worker, _channel = make_worker(listener(), app_dir=str(tmp_path), **options)
        with pytest.raises(error, match=words):
            await worker.init()
        assert worker.servers == []

    uvloop.run(main())
    assert "Traceback" not in caplog.text  # the master prints the error, once


def test_import_app_accepts_callables_and_dotted_attributes(tmp_path: Path) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    assert import_app(HTTPConfig(app=app)) is app
    name = write_module(tmp_path, "class Holder:\n    async def app(scope, r, s): ...\n")
    found = import_app(HTTPConfig(app=f"{name}:Holder.app", app_dir=str(tmp_path)))
    assert found.__name__ == "app"
    assert import_app(HTTPConfig(app=f"{name}:Holder.app", app_dir="")) is found
    assert import_app(HTTPConfig(app=f"{name}:Holder.app", app_dir=str(tmp_path))) is found


def test_drain_before_init_does_nothing() -> None:
    async def main() -> None:
        worker, channel = make_worker(listener(), app="m:app")
        await worker.drain()
        assert worker.state is None and worker.lifespan is None and channel.frames == []

    uvloop.run(main())


def test_check_options_refuses_what_the_worker_could_not_start_with() -> None:
    HTTPWorker.check_options({"app": "m:app", "keep_alive": 2.0})
    with pytest.raises(ValueError, match="keep_alive"):
        HTTPWorker.check_options({"app": "m:app", "keep_alive": 0})
    with pytest.raises(ValueError, match="app"):
        HTTPWorker.check_options({})


# -- end of input and resets on real sockets (uvloop's transport, not the fake) ----------------


def serve_app(app: Any) -> tuple[HTTPWorker, int]:
    sock = listener()
    worker, _ = make_worker(sock, app=app, lifespan="off")
    return worker, sock.getsockname()[1]


def talk(port: int, raw: bytes, *, half_close: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(raw)
        if half_close:
            c.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := c.recv(65536):
            data += chunk
        return data


async def until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_pipelined_requests_then_a_half_close_get_every_answer() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    async def main() -> None:
        worker, port = serve_app(app)
        await worker.init()
        raw = b"".join(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(3))
        for _ in range(5):
            data = await asyncio.to_thread(talk, port, raw, half_close=True)
            assert data.count(b"HTTP/1.1 200 ") == 3 and data.endswith(b"/2")
        await worker.drain()

    uvloop.run(main())


def test_a_client_that_closes_while_the_app_waits_is_noticed_at_once() -> None:
    told: list[Any] = []
    waiting: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        waiting.append(1)
        told.append(await receive())  # a long-poll: returns when the client leaves

    async def main() -> None:
        worker, port = serve_app(app)
        await worker.init()
        assert worker.state is not None
        clients = []
        for _ in range(5):
            c = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 10)
            c.sendall(b"GET /poll HTTP/1.1\r\nHost: t\r\n\r\n")
            clients.append(c)
        await until(lambda: len(waiting) == 5)
        for c in clients:
            c.close()
        await until(lambda: len(told) == 5 and not worker.state.connections)  # no CLOSE-WAIT
        assert told == [{"type": "http.disconnect"}] * 5
        await worker.drain()

    uvloop.run(main())


def test_send_raises_as_soon_as_a_write_meets_a_reset() -> None:
    outcome: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 100, "more_body": True})
        sent = 0
        try:
            while sent < 2000:
                time.sleep(0.002)  # work that never yields to the loop
                await send({"type": "http.response.body", "body": b"x" * 100, "more_body": True})
                sent += 1
        except ClientDisconnected as exc:
            outcome.append(exc)
        outcome.append(sent)

    def reset(port: int) -> None:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        c.recv(10)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()

    async def main() -> None:
        worker, port = serve_app(app)
        await worker.init()
        await asyncio.to_thread(reset, port)
        await until(lambda: len(outcome) == 2)
        assert isinstance(outcome[0], ClientDisconnected) and outcome[1] < 2000
        await worker.drain()

    uvloop.run(main())


@pytest.mark.parametrize(("graceful", "idle_for"), [(10.0, 8.0), (0.0, None)])
def test_drain_gives_idle_connections_most_of_the_graceful_timeout(
    graceful: float, idle_for: float | None
) -> None:
    asked: list[tuple[float | None, int]] = []

    class State:
        async def drain(self, idle_for: float | None = None, close_code: int = 0) -> None:
            asked.append((idle_for, close_code))

        def stop_sweeping(self) -> None:
            pass

        def send_report(self) -> bool:
            return False

    async def main() -> None:
        channel = Channel()
        worker = HTTPWorker(
            type="http",
            id=1,
            generation=1,
            sockets=[],
            options={"app": "m:app"},
            channel=channel,
            graceful_timeout=graceful,
        )
        worker.state = State()  # type: ignore[assignment]
        await worker.drain()
        worker.replaced = True  # a reload: WebSockets are told the service restarts
        await worker.drain()

    uvloop.run(main())
    assert asked == [(idle_for, 1001), (idle_for, 1012)]


def keeps_sending_after_a_refusal(port: int) -> tuple[bytes, list[str]]:
    """Send a field line too long, read the 431 (it comes at once), then keep sending (as a
    client writing its head in small pieces does): what it read, and its sends' errors."""
    errors: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: " + b"v" * 9000)
        answer = c.recv(65536)
        for _ in range(20):
            time.sleep(0.005)
            try:
                c.sendall(b"v" * 100)
            except OSError as exc:
                errors.append(type(exc).__name__)
        while chunk := c.recv(65536):
            answer += chunk
        return answer, errors


def test_a_refused_client_still_sending_reads_its_answer_and_no_reset() -> None:
    """A lingering close: our 431 and a FIN go out, the socket stays open a moment, so the
    client's further writes do not draw a reset that could hide the answer."""

    async def main() -> None:
        worker, port = serve_app(hello_app_for_linger)
        await worker.init()
        assert worker.state is not None
        answer, errors = await asyncio.to_thread(keeps_sending_after_a_refusal, port)
        assert answer.startswith(b"HTTP/1.1 431 ") and errors == []
        assert worker.state._lingering == 1
        await until(lambda: worker.state is not None and worker.state._lingering == 0, 5)
        await worker.drain()

    uvloop.run(main())


@pytest.mark.parametrize("length", [b"0" * 20 + b"5", b"0" * 29 + b"5", b"9" * 5000], ids=len)
def test_a_content_length_h11_refuses_is_400_and_puts_no_traceback_in_the_log(
    length: bytes, http_parser: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception out of ``data_received`` is logged by the loop at ERROR, with its
    traceback, for every request that raises it: a Content-Length over 4,300 digits did (in
    ``int()``, 1.2 MB of log for 1,000 requests). Over 20 digits, h11 answers 400 and the
    fast path leaves it to h11, so either way: the 400, a close, and nothing logged."""

    async def main() -> bytes:
        sock = listener()
        worker, _ = make_worker(sock, app=hello_app_for_linger, lifespan="off", http=http_parser)
        await worker.init()
        raw = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %s\r\n\r\nhello" % length
        raw += b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"  # pipelined: not to be answered
        answer = await asyncio.to_thread(talk, sock.getsockname()[1], raw, half_close=False)
        await worker.drain()
        return answer

    caplog.set_level(logging.DEBUG)
    answer = uvloop.run(main())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1
    assert answer.endswith(b"\r\n\r\nInvalid HTTP request.\n")


def test_lingering_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefork.http import _state

    monkeypatch.setattr(_state, "MAX_LINGERING", 0)

    async def main() -> None:
        worker, port = serve_app(hello_app_for_linger)
        await worker.init()
        answer, errors = await asyncio.to_thread(keeps_sending_after_a_refusal, port)
        assert answer.startswith(b"HTTP/1.1 431 ") or errors  # a plain close: a reset may come
        assert errors  # writes after a plain close meet the reset
        await worker.drain()

    uvloop.run(main())


async def hello_app_for_linger(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


def test_no_lingering_while_the_answer_is_still_buffered_or_when_the_socket_is_gone() -> None:
    from prefork.http._state import ServerState

    class Transport:
        def __init__(self, sock: socket.socket, buffered: int) -> None:
            self.sock, self.buffered = sock, buffered

        def get_extra_info(self, name: str) -> Any:
            return self.sock if name == "socket" else None

        def get_write_buffer_size(self) -> int:
            return self.buffered

    async def main() -> None:
        state = ServerState(
            HTTPConfig(app="m:app"), hello_app_for_linger, asyncio.get_running_loop()
        )
        a, b = socket.socketpair()
        unconnected = socket.socket()
        try:
            state.linger(Transport(a, buffered=5))  # a FIN now would overtake the answer
            state.linger(Transport(unconnected, buffered=0))  # shutdown() fails: no linger
            assert state._lingering == 0
        finally:
            for s in (a, b, unconnected):
                s.close()

    uvloop.run(main())


WSGI_SOURCE = """
import threading
from wsgiref.validate import validator

STUCK = threading.Event()

def plain(environ, start_response):
    if environ["PATH_INFO"] == "/stuck":
        STUCK.wait(10)
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

app = validator(plain)
"""


@pytest.mark.parametrize(("worker_id", "told"), [(1, True), (2, False)])
def test_a_wsgi_worker_serves_in_threads_says_so_once_and_retires_once_when_stuck(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, worker_id: int, told: bool
) -> None:
    name = write_module(tmp_path, WSGI_SOURCE)

    async def main() -> None:
        sock = listener()
        port = sock.getsockname()[1]
        worker, channel = make_worker(sock, app=f"{name}:plain", app_dir=str(tmp_path), threads=3)
        worker.id = worker_id
        worker.timeout = 0.2
        worker._exit = asyncio.get_running_loop().create_future()
        await worker.init()
        assert worker.pool is not None and len(worker.pool.threads) == 3
        results = await asyncio.to_thread(get, port, [("GET", "/", None), ("POST", "/", b"abc")])
        assert [(s, b) for s, _, b in results] == [(200, b"hello"), (200, b"abc")]
        stuck = await asyncio.to_thread(get, port, [("GET", "/stuck", None)])
        assert stuck[0][0] == 504
        worker._retire_once()  # a second stuck thread: no second request
        assert channel.frames.count(("retire", None)) == 1
        sys.modules[name].STUCK.set()
        await worker.prepare_for_shutdown()
        assert worker._exit.result() == 0

    with caplog.at_level(logging.INFO, "prefork.http"):
        uvloop.run(main())
    line = f"serving {name}:plain as a WSGI app, 3 thread(s) per worker (--interface auto)"
    assert (line in caplog.text) is told


def test_threads_with_an_asgi_app_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = write_module(tmp_path)

    async def main() -> None:
        worker, _channel = make_worker(
            listener(), app=f"{name}:app", app_dir=str(tmp_path), threads=4
        )
        worker._exit = asyncio.get_running_loop().create_future()
        await worker.init()
        assert worker.pool is None
        await worker.prepare_for_shutdown()

    with caplog.at_level(logging.INFO, "prefork.http"):
        uvloop.run(main())
    assert "--threads 4 is ignored: an ASGI app runs on the event loop" in caplog.text
    assert f"serving {name}:app as an ASGI app (--interface auto)" in caplog.text


def test_a_closed_connection_is_published_and_rechecks_the_acceptors(tmp_path: Path) -> None:
    """A worker that stepped aside from accepting must hear of every close at once (see
    ``Acceptor.recheck``), and its peers must see its count drop."""
    name = write_module(tmp_path)

    async def main() -> None:
        sock = listener()
        port = sock.getsockname()[1]
        worker, _ = make_worker(sock, app=f"{name}:app", app_dir=str(tmp_path))
        worker.board, worker.slot = Board(), 0
        await worker.init()
        assert worker.state is not None and worker.board.values() == [0]
        rechecked: list[int] = []
        acceptor = worker.servers[0]
        acceptor.recheck = lambda: rechecked.append(len(worker.state.connections))  # type: ignore[method-assign,union-attr]
        await asyncio.to_thread(get, port, [("GET", "/", None)])
        deadline = time.monotonic() + 5
        while not rechecked and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert rechecked == [0] and worker.board.values() == [0]
        await worker.drain()

    uvloop.run(main())

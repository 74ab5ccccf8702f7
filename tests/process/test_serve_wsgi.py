"""`prefork serve --interface wsgi` end to end: a real master serving a WSGI app (wrapped in
``wsgiref.validate``, warnings made errors) to real clients: bodies both ways, streaming,
HEAD, an app that raises, a stuck thread (504, the stack logged, the worker replaced),
reloads under load, a drain with a request in flight."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from helpers import alive, wait_until
from test_serve import Start, failures, get, load, serve, wait_answers, wait_log, wait_serving

pytestmark = pytest.mark.timeout(60)

APP = "wsgi_apps:app"
#: ``validator()`` returns a ``(*args, **kw)`` callable: no shape tells it from ASGI.
WSGI = ("--interface", "wsgi")


def request(
    port: int, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def test_a_wsgi_app_serves_bodies_both_ways_streams_and_answers_head(
    start: Start, sock: socket.socket
) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, *WSGI, "--threads", "2", app=APP, workers=1)
    (pid,) = wait_serving(master, 1)
    assert "serving wsgi_apps:app as a WSGI app, 2 thread(s) per worker (--interface wsgi)" in (
        master.stderr()
    )
    response = get(port)
    assert response.status == 200 and int(response.data) == pid  # type: ignore[attr-defined]
    body = bytes(range(256)) * 273 + b"end"  # 69,891 bytes: past the 64 KiB body buffer
    response, echoed = request(port, "POST", "/echo", body)
    assert response.status == 200 and echoed == body
    chunks = (bytes([65 + i]) * 10_000 for i in range(8))  # http.client sends it chunked
    response, echoed = request(port, "POST", "/echo", chunks)
    assert response.status == 200 and echoed == b"".join(bytes([65 + i]) * 10_000 for i in range(8))
    response, streamed = request(port, "GET", "/stream")
    assert response.getheader("transfer-encoding") == "chunked"
    assert streamed == b"".join(f"chunk {i}\n".encode() for i in range(5))
    response, nothing = request(port, "HEAD", "/")
    assert response.status == 200 and nothing == b""
    assert response.getheader("content-length") == str(len(str(pid)))
    response, environ = request(port, "GET", "/environ?a=1")
    assert environ.decode().splitlines() == [
        "SCRIPT_NAME=",
        "PATH_INFO=/environ",
        "QUERY_STRING=a=1",
        "SERVER_PROTOCOL=HTTP/1.1",
        "wsgi.url_scheme=http",
    ]
    assert "AssertionError" not in master.stderr() and "WSGIWarning" not in master.stderr()


def test_an_app_that_raises_gets_a_500_and_the_worker_serves_on(
    start: Start, sock: socket.socket
) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, *WSGI, app=APP, workers=1)
    (pid,) = wait_serving(master, 1)
    response, body = request(port, "GET", "/raise")
    assert response.status == 500 and body == b"Internal Server Error\n"
    wait_log(master, "RuntimeError: the app broke")
    assert int(get(port).data) == pid  # type: ignore[attr-defined]


def test_a_stuck_thread_gets_504_its_stack_logged_and_the_worker_replaced(
    start: Start, sock: socket.socket
) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, *WSGI, "--threads", "2", "--timeout", "2", app=APP, workers=1)
    (old,) = wait_serving(master, 1)
    started = time.monotonic()
    response, body = request(port, "GET", "/stuck")
    assert response.status == 504 and body == b"Gateway Timeout\n"
    assert 2 <= time.monotonic() - started < 6
    wait_log(master, "for over 2s (--timeout): answered 504")
    assert re.search(r"Its stack:\n(.|\n)*threading.Event\(\).wait\(\)", master.stderr())
    (new,) = wait_serving(master, 1, replacing={old})
    assert int(get(port).data) == new  # type: ignore[attr-defined]


def test_three_reloads_under_load_fail_no_request(start: Start, sock: socket.socket) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, *WSGI, "--threads", "2", app=APP, workers=2)
    seen = wait_serving(master, 2)
    with load(port, threads=4) as clients:
        wait_answers(clients, 100)
        for n in range(1, 4):
            master.signal(signal.SIGHUP)
            wait_log(master, "reload done", count=n)
            seen |= wait_serving(master, 2, replacing=seen)
            wait_answers(clients, 50)
    assert failures(clients) == []


def test_a_reload_lets_the_request_in_flight_finish(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, *WSGI, "--threads", "2", app=APP, workers=1)
    (old,) = wait_serving(master, 1)
    flag = tmp_path / "release.flag"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"/hold?{flag}")
    wait_until(flag.with_suffix(".started").exists, 5, "the app holds the request")
    master.signal(signal.SIGHUP)
    wait_log(master, "reload done")
    wait_log(master, "is ready", count=2)  # the new worker
    assert alive(old)  # draining: its request is in flight
    flag.touch()
    held = conn.getresponse()
    assert held.status == 200 and int(held.read()) == old
    assert held.getheader("connection") == "close"
    conn.close()
    (new,) = wait_serving(master, 1, replacing={old})
    assert int(get(port).data) == new  # type: ignore[attr-defined]


def test_a_template_imports_a_wsgi_app_for_its_workers(start: Start, sock: socket.socket) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, *WSGI, "--template", "--threads", "2", app=APP, workers=2)
    wait_log(master, "is ready", count=3, timeout=15)  # the template and its two workers
    assert "[http] template of generation 1 is ready" in master.stderr()
    assert get(port).status == 200
    echoed = request(port, "POST", "/echo", b"from a template")[1]
    assert echoed == b"from a template"


@pytest.mark.parametrize(
    ("options", "code", "error"),
    [
        ((*WSGI, "--threads", "8"), 0, ""),
        (("--interface", "asgi"), 0, ""),  # a (*args) callable may be ASGI: not refused
    ],
)
def test_check_config_accepts_a_wsgi_app(
    start: Start, sock: socket.socket, options: tuple[str, ...], code: int, error: str
) -> None:
    master = serve(start, sock, *options, "--check-config", app=APP, workers=1)
    assert master.wait_exit() == code
    assert error in master.stderr()


def test_check_config_refuses_a_plain_wsgi_function_as_asgi(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    (tmp_path / "plain.py").write_text("def app(environ, start_response):\n    return []\n")
    master = serve(
        start, sock, "--interface", "asgi", "--check-config", app="plain:app", app_dir=tmp_path
    )
    assert master.wait_exit() == 2
    assert "'plain:app' looks like a WSGI app" in master.stderr()

"""`prefork serve --reload` end to end: a real master watching a temp directory. A save brings
the new code (the rolling reload), a syntax error is printed once while the old code keeps
answering, the next save after the fix reloads again; SIGTTIN leaves one watcher, SIGHUP
replaces it too, and a stop leaves no watcher behind.

Each master runs in its own session and is stopped (SIGINT, then SIGKILL of its process group)
by the ``start`` fixture; its socket is bound here on 127.0.0.1 and handed over as fd://N.
Conditions are polled with a deadline; no timing is asserted beyond generous bounds.
"""

from __future__ import annotations

import http.client
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import MasterProcess, alive, wait_until

pytestmark = pytest.mark.timeout(60)

Start = Callable[..., MasterProcess]
WATCHER_READY = re.compile(r"\[reload\] worker \d+ \(pid (\d+), generation \d+\) is ready")
APP = """\
VERSION = {version!r}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": VERSION.encode()}})
"""


def write_app(directory: Path, version: str) -> None:
    (directory / "reloading_app.py").write_text(APP.format(version=version))


def answer(port: int) -> str:
    """The app's VERSION, or what went wrong (never raises)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        conn.close()


def serve_reloading(start: Start, sock: socket.socket, code: Path, *options: str) -> MasterProcess:
    argv = [sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
    argv += ["--app-dir", str(code), "--reload", "--reload-dir", str(code), "--reload-delay"]
    argv += ["0.1", *options, "reloading_app:app"]
    return start(argv, pass_fds=[sock])


def watchers(master: MasterProcess) -> list[int]:
    """The pids of the watchers logged as ready, oldest first."""
    return [int(pid) for pid in WATCHER_READY.findall(master.stderr())]


def wait_watching(master: MasterProcess, count: int = 1) -> int:
    def ready() -> list[int]:
        master.check_running("the watcher")
        return watchers(master)[count - 1 :]

    return wait_until(ready, 10, f"watcher {count} ready")[0]


def wait_answer(port: int, version: str, timeout: float = 10.0) -> float:
    """Seconds until the app answers ``version``."""
    began = time.monotonic()
    wait_until(lambda: answer(port) == version, timeout, f"the app answering {version}")
    return time.monotonic() - began


@pytest.mark.parametrize("template", ["auto", "off"])  # the default reloads through templates
def test_a_save_reloads_and_a_syntax_error_keeps_the_old_code_answering(
    start: Start, sock: socket.socket, tmp_path: Path, template: str
) -> None:
    port = sock.getsockname()[1]
    write_app(tmp_path, "v1")
    master = serve_reloading(start, sock, tmp_path, "--workers", "2", "--template", template)
    wait_watching(master)
    assert answer(port) == "v1"
    first = master.stderr().splitlines()[0]
    assert "--reload: watching" in first and "not for production" in first

    write_app(tmp_path, "v2")
    took = wait_answer(port, "v2")
    assert took < 10
    wait_until(lambda: "[http] reload done: 2 worker(s) replaced" in master.stderr())
    assert f"[reload] {tmp_path}/reloading_app.py changed: reloading http" in master.stderr()

    (tmp_path / "reloading_app.py").write_text("def broken(:\n")
    wait_until(lambda: "[http] reload rolled back" in master.stderr(), 10)
    assert answer(port) == "v2"  # the old workers keep answering
    log = master.stderr()
    assert log.count("could not start:\n") == 1  # the error, printed once...
    assert log.count("def broken(:") == 1
    assert log.count("SyntaxError: invalid syntax") == 2  # ...and named by the rollback
    failed = "the template of generation 3" if template == "auto" else "worker"
    assert f"reload rolled back: {failed}" in log

    write_app(tmp_path, "v3")  # fixed: the next save reloads again
    wait_answer(port, "v3")
    wait_until(lambda: master.stderr().count("reload done: 2 worker(s) replaced") == 2, 10)
    assert "the master was not running" not in master.stderr()  # no spin on a past backoff


def test_one_watcher_whatever_sigttin_replaced_by_sighup_and_none_left_after_a_stop(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    write_app(tmp_path, "v1")
    master = serve_reloading(start, sock, tmp_path)  # one HTTP worker by default
    old = wait_watching(master)
    wait_until(lambda: len(master.workers()) == 2)  # the HTTP worker and the watcher
    master.signal(signal.SIGTTIN)  # one worker more for every broker: not for the watcher
    wait_until(lambda: "[reload] scaled to 1 worker(s)" in master.stderr())
    assert len(watchers(master)) == 2  # one more was ready...
    wait_until(lambda: {*watchers(master)} & master.workers() == {old}, what="...and left")
    wait_until(lambda: len(master.workers()) == 3)  # 2 HTTP workers and the watcher
    master.signal(signal.SIGHUP)
    new = wait_watching(master, 3)
    wait_until(lambda: not alive(old), what="the old watcher gone")
    write_app(tmp_path, "v2")
    wait_answer(port, "v2")  # the new watcher watches
    assert master.workers() >= {new}
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0
    assert not alive(new)
    assert "[reload] worker" in master.stderr() and "left as asked" in master.stderr()

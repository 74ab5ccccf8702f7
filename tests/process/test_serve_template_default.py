"""``--template auto``, end to end: `prefork serve` forks its workers from a template, unless
the app's import leaves a thread running (then they import the app themselves, one line says
so, and a reload of fixed code uses a template again); ``on`` uses it anyway, the default
(``off``) starts none, and an API worker class that prepares nothing gets none under ``auto``.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import MasterProcess, ask, children, wait_until
from test_serve_reload import wait_answer, write_app

pytestmark = pytest.mark.timeout(60)

Start = Callable[..., MasterProcess]
THREADED = """\
import threading
import time

VERSION = "threads"


def poll():
    while True:
        time.sleep(1)


threading.Thread(target=poll, name="poll", daemon=True).start()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": VERSION.encode()})
"""
FELL_BACK = "[http] template of generation 1 not used: the import started threads (poll)"


def serve(start: Start, sock: socket.socket, code: Path, *options: str) -> MasterProcess:
    argv = [sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
    argv += ["--app-dir", str(code), *options, "reloading_app:app"]
    return start(argv, pass_fds=[sock])


def titles(master: MasterProcess) -> list[str]:
    """The process titles of the master's children (workers, templates, standbys)."""
    found = []
    for pid in children(master.pid):
        with contextlib.suppress(OSError):  # left meanwhile
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
    return found


def templates(master: MasterProcess) -> list[str]:
    return [t for t in titles(master) if "template gen" in t]


def test_auto_forks_from_a_template_unless_the_import_started_a_thread(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    (tmp_path / "reloading_app.py").write_text(THREADED)
    master = serve(start, sock, tmp_path, "-w", "2", "--template", "auto")
    wait_answer(port, "threads", timeout=20)
    # one line names the thread and what to do; the template leaves, the workers import
    err = master.stderr()
    assert err.count(FELL_BACK) == 1
    assert "pass --template off to silence this" in err
    wait_until(lambda: len(titles(master)) == 2 and not templates(master), 15, "2 workers only")

    write_app(tmp_path, "v2")  # fixed: no thread at import
    master.signal(signal.SIGHUP)
    wait_answer(port, "v2", timeout=20)
    # A new worker serves before the master has read its frames (and the template's) on a
    # busy machine: the master's line may come after the first v2 answer.
    ready = "[http] template of generation 2 is ready"
    wait_until(lambda: ready in master.stderr(), 15, ready)
    wait_until(lambda: any("template gen 2" in t for t in templates(master)), 15, "template 2")
    assert master.stderr().count("not used") == 1


def test_auto_does_not_use_a_template_whose_import_opened_a_socket(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    """A connection opened at import (a database client's, say) would be shared by every
    worker forked from the template: auto does not use it."""
    port = sock.getsockname()[1]
    app = THREADED.replace('threading.Thread(target=poll, name="poll", daemon=True).start()', "")
    app = app.replace(
        'VERSION = "threads"', 'import socket\nCONN = socket.socket()\nVERSION = "conn"'
    )
    (tmp_path / "reloading_app.py").write_text(app)
    master = serve(start, sock, tmp_path, "-w", "1", "--template", "auto")
    wait_answer(port, "conn", timeout=20)
    line = "[http] template of generation 1 not used: the import opened 1 socket; workers import"
    assert master.stderr().count(line) == 1
    wait_until(lambda: len(titles(master)) == 1 and not templates(master), 15, "1 worker only")


def test_template_on_uses_the_template_of_a_threaded_import_and_says_so(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    (tmp_path / "reloading_app.py").write_text(THREADED)
    master = serve(start, sock, tmp_path, "-w", "1", "--template", "on")
    wait_answer(port, "threads", timeout=20)
    err = master.stderr()
    assert (
        "though the import started threads (poll): its workers are forked from it anyway "
        "(--template on), without those threads; pass --template auto" in err
    )
    assert "not used" not in err
    wait_until(lambda: any("template gen 1" in t for t in templates(master)), 15, "template")


def test_by_default_no_template_starts(start: Start, sock: socket.socket, tmp_path: Path) -> None:
    port = sock.getsockname()[1]
    write_app(tmp_path, "v1")
    master = serve(start, sock, tmp_path, "-w", "2")  # the default: --template off
    wait_answer(port, "v1", timeout=20)
    wait_until(lambda: len(titles(master)) == 2, 15, "2 workers")
    assert not templates(master) and "template of generation" not in master.stderr()


def test_auto_gives_an_api_worker_that_prepares_nothing_no_template(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    script = tmp_path / "api_master.py"
    script.write_text(
        "import sys\n"
        "from prefork import Master\n"
        "from workers import Echo\n"
        "master = Master()\n"
        f"master.broker('echo', Echo, workers=2, template='auto', listen=['fd://{sock.fileno()}'])\n"
        "sys.exit(master.run())\n"
    )
    port = sock.getsockname()[1]
    master = start([sys.executable, str(script)], pass_fds=[sock])
    wait_until(lambda: len(titles(master)) == 2, 15, "2 workers")
    assert ask(port, timeout=15).startswith("pong ")  # a worker answers
    assert not templates(master) and "template of generation" not in master.stderr()

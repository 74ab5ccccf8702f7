"""`prefork serve --template` end to end: the template imports the app once, a SIGHUP loads
the new code through a new template, and a broken app on disk keeps the old code answering,
crash replacements included. (``--reload`` rolls the same way.)"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import MasterProcess, wait_until
from test_serve_reload import answer, wait_answer, write_app

pytestmark = pytest.mark.timeout(60)

Start = Callable[..., MasterProcess]


def test_serve_with_a_template_reloads_new_code_and_keeps_the_old_on_a_broken_deploy(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    write_app(tmp_path, "v1")
    argv = [sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
    argv += ["--app-dir", str(tmp_path), "--template", "-w", "1", "reloading_app:app"]
    master = start(argv, pass_fds=[sock])
    wait_answer(port, "v1", timeout=15)
    assert "[http] template of generation 1 is ready" in master.stderr()

    write_app(tmp_path, "v2")
    master.signal(signal.SIGHUP)
    wait_answer(port, "v2", timeout=15)

    (tmp_path / "reloading_app.py").write_text("raise RuntimeError('broken deploy')\n")
    master.signal(signal.SIGHUP)
    wait_until(lambda: "reload rolled back: the template of generation 3" in master.stderr(), 15)
    worker = int(wait_until(lambda: [p for p in os.listdir("/proc") if _worker(p, master.pid)])[0])
    # (the generation 2 worker: the one of generation 1 may still be leaving)
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: "worker 3 (pid" in master.stderr() and answer(port) == "v2", 15)


def _worker(pid: str, master: int) -> bool:
    """Whether ``pid`` is an HTTP worker of ``master`` of generation 2 (not a template)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    ours = int(stat.rsplit(")", 1)[1].split()[1]) == master
    return ours and b"worker" in cmdline and b"gen 2" in cmdline

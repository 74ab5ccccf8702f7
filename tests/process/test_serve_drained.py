"""`prefork serve` while drained: a 503 at once, and serving again after SIGUSR2."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, wait_until

pytestmark = pytest.mark.timeout(30)


def status(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_drained_server_answers_503_at_once_and_serves_again_on_resume(start, sock):
    port = sock.getsockname()[1]
    examples = Path(ROOT) / "examples"
    argv = [sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
    argv += ["--workers", "1", "--app-dir", str(examples), "hello:app"]
    master = start(argv, pass_fds=[sock])
    wait_until(lambda: status(port) == 200 if master.workers() else False, 10)
    assert f"http x1 on http://127.0.0.1:{port}; control " in master.stderr()
    master.signal(signal.SIGTERM)
    wait_until(lambda: not master.workers(), 10, "the workers to leave")
    began = time.monotonic()
    assert status(port) == 503
    assert time.monotonic() - began < 1.0
    master.signal(signal.SIGUSR2)
    wait_until(lambda: status(port) == 200, 10, "serving again")


def test_scaled_to_zero_answers_503_at_once_and_serves_again_when_scaled_up(start, sock, tmp_path):
    """`ctl scale http 0` left clients waiting in the queue until they timed out."""
    port = sock.getsockname()[1]
    path = tmp_path / "m.ctl"
    examples = Path(ROOT) / "examples"
    argv = [sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
    argv += ["--workers", "1", "--app-dir", str(examples), "--control", str(path), "hello:app"]
    master = start(argv, pass_fds=[sock])
    wait_until(lambda: status(port) == 200 if master.workers() else False, 10)
    assert ctl(path, "scale", "http", "0").returncode == 0
    wait_until(lambda: not master.workers(), 10, "the worker to leave")
    began = time.monotonic()
    assert status(port) == 503
    assert time.monotonic() - began < 1.0
    assert "[http] scaled to 0 worker(s): new connections are turned away" in master.stderr()
    assert ctl(path, "scale", "http", "1").returncode == 0
    wait_until(lambda: status(port) == 200, 10, "serving again")


def ctl(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefork", "ctl", "--control", str(path), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )

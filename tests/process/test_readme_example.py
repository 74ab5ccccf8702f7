"""The README's Python API example runs as written (only its two ports are swapped for free
ones, so the test can run beside anything)."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, wait_until

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readme_example() -> str:
    text = (Path(ROOT) / "README.md").read_text()
    section = text[text.index("## The Python API") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_python_api_example_serves_echoes_and_runs_jobs(tmp_path: Path) -> None:
    web, echo = free_port(), free_port()
    code = readme_example().replace("127.0.0.1:8000", f"127.0.0.1:{web}")
    code = code.replace("127.0.0.1:8001", f"127.0.0.1:{echo}")
    script = tmp_path / "demo.py"  # as if in the repository's root: cwd and import path
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script)], cwd=ROOT, env=env, stdout=stdout, stderr=stderr,
            start_new_session=True,
        )  # fmt: skip
    try:

        def answered() -> bool:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", web, timeout=2)
                conn.request("GET", "/")
                return conn.getresponse().status == 200
            except OSError:
                return False

        wait_until(answered, 20, "the HTTP worker")
        with socket.create_connection(("127.0.0.1", echo), timeout=5) as conn:
            conn.sendall(b"hello")
            assert conn.recv(100) == b"hello"
        wait_until(lambda: "job done: {'job': 1}" in out.read_text(), 10, "a job")
        wait_until(lambda: "report: {'jobs_done': 1}" in out.read_text(), 10, "a report")
        assert f"web x2 on http://127.0.0.1:{web}" in err.read_text()  # the master's log
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

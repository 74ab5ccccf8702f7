"""`prefork load`'s start-up is CPU its figures pay for (its capacity is requests per CPU
second, start-up included): a run imports neither the HTTP worker nor `prefork serve`'s
set-up, in the master or in its workers."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)

#: What only `prefork serve` (or `prefork ctl`) needs: none of it in a load run.
SERVE_ONLY = (
    "prefork.http",
    "prefork._serve_command",
    "prefork.master._setup",
    "prefork.master._watch",
    "prefork.master._app_check",
    "prefork.ops._ctl",
    "h11",
    "wsproto",
)


def imported(stderr: str) -> set[str]:
    """The modules ``python -X importtime`` says a process tree imported."""
    return {
        line.rpartition("|")[2].strip() for line in stderr.splitlines() if "import time:" in line
    }


def test_a_load_run_imports_nothing_of_the_server(start: Any, sock: socket.socket) -> None:
    # A listener that never answers: the workers connect and send (their own imports count
    # too), and the run ends at its duration.
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    argv = [sys.executable, "-X", "importtime", "-m", "prefork", "load", url]
    run = start([*argv, "-d", "200ms", "-c", "2", "-w", "2", "--json"])
    run.wait_exit(30)
    modules = imported(run.stderr())
    assert {"prefork.cli", "prefork.load._run", "prefork.load._client"} <= modules
    heavy = {m for m in modules if m.split(".")[0] in ("h11", "wsproto")}
    heavy |= {m for m in modules if m.startswith(SERVE_ONLY)}
    assert heavy == set()


def test_the_check_sees_the_server_when_it_is_imported() -> None:
    code = "from prefork import cli; cli.build_parser()"  # every command: serve's too
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=30
    )
    assert {"prefork._serve_command", "prefork.http", "h11"} <= imported(out.stderr)

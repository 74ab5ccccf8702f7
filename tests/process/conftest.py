from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import MasterProcess, app_argv, listener


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., MasterProcess]]:
    """Start a test master from a config dict (or an argv list); every process group it made
    is stopped, then SIGKILLed, when the test ends, whatever happened."""
    started: list[MasterProcess] = []

    def run(
        config: dict[str, Any] | list[str],
        *,
        pass_fds: list[socket.socket] = (),  # type: ignore[assignment]
        env: dict[str, str] | None = None,
    ) -> MasterProcess:
        argv = app_argv(config) if isinstance(config, dict) else config
        workdir = tmp_path / f"master{len(started)}"
        workdir.mkdir(exist_ok=True)
        master = MasterProcess(argv, workdir, pass_fds=pass_fds, env=env)
        started.append(master)
        return master

    yield run
    for master in started:
        master.stop()


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1 (port from the OS), to give to a master as fd://N."""
    s = listener()
    yield s
    s.close()

"""systemd's notify protocol from a real master: READY, RELOADING/READY around a reload,
STOPPING on stop. The test plays systemd with a unix datagram socket."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from helpers import wait_until
from test_process_lifecycle import echo

pytestmark = pytest.mark.timeout(30)


def test_ready_reloading_ready_stopping(start, sock, tmp_path: Path):
    path = str(tmp_path / "notify")
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(path)
    systemd.settimeout(10)
    try:
        master = start(echo(sock, workers=2), pass_fds=[sock], env={"NOTIFY_SOCKET": path})
        ready = systemd.recv(4096).decode().split("\n")
        assert ready[0] == "READY=1" and ready[1].startswith("STATUS=serving: echo x2")
        assert len(master.ready_pids()) == 2  # announced only once both were ready

        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        master.signal(signal.SIGHUP)
        reloading = systemd.recv(4096).decode().split("\n")
        assert reloading[0] == "RELOADING=1"
        assert int(reloading[1].removeprefix("MONOTONIC_USEC=")) >= before
        assert systemd.recv(4096).decode().startswith("READY=1\n")
        assert master.events("reload_done")  # READY again only after the reload finished

        master.signal(signal.SIGINT)
        assert systemd.recv(4096) == b"STOPPING=1"
        master.signal(signal.SIGHUP)  # a reload while stopping is not announced
        assert master.wait_exit() == 0
        systemd.settimeout(0.2)
        with pytest.raises(TimeoutError):
            systemd.recv(4096)
    finally:
        systemd.close()


def test_no_notify_socket_means_no_notification(start, sock):
    master = start(echo(sock, workers=1), pass_fds=[sock])
    master.wait_ready(1)
    wait_until(lambda: "started" in master.stderr(), what="the start line")
    assert "could not notify systemd" not in master.stderr()

"""sd_notify: the lines systemd reads, sent only when it gave us a socket."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from prefork.master._notify import Notifier


def test_nothing_without_notify_socket() -> None:
    notifier = Notifier({})
    assert notifier.address == ""
    notifier.send("READY=1")  # no socket, no error


def test_lines_reach_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(path)
        Notifier({"NOTIFY_SOCKET": path}).send("READY=1", "STATUS=serving")
        assert systemd.recv(4096) == b"READY=1\nSTATUS=serving"


def test_abstract_socket_names_start_with_nul() -> None:
    name = f"prefork-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.address == "\0" + name
        notifier.send("STOPPING=1")
        assert systemd.recv(4096) == b"STOPPING=1"


def test_a_failed_send_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="prefork.master"):
        Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).send("READY=1")
    assert "could not notify systemd (READY=1)" in caplog.text

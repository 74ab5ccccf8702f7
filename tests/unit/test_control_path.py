"""Where the control socket lives (spec 5): one rule for the master and ``prefork ctl``."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefork.core._options import ConfigError
from prefork.ops import _control_path as control_path

UID = os.getuid()


@pytest.mark.parametrize(
    ("pidfile", "socket_path"),
    [
        ("run/web.pid", "run/web.ctl"),
        ("/var/run/prefork.pid", "/var/run/prefork.ctl"),
        ("run/web", "run/web.ctl"),
        ("run/web.pidfile", "run/web.pidfile.ctl"),
        ("web.pid.pid", "web.pid.ctl"),
    ],
)
def test_beside_the_pid_file(pidfile: str, socket_path: str) -> None:
    assert control_path.for_pidfile(pidfile) == socket_path


def test_runtime_dir_under_xdg_runtime_dir() -> None:
    environ = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert control_path.runtime_dir(environ, 1000) == "/run/user/1000/prefork"


@pytest.mark.parametrize("environ", [{}, {"XDG_RUNTIME_DIR": ""}])
def test_runtime_dir_in_tmp_without_xdg_runtime_dir(environ: dict[str, str]) -> None:
    assert control_path.runtime_dir(environ, 1000) == "/tmp/prefork-1000"


def test_default_path_is_beside_the_pid_file_when_there_is_one() -> None:
    environ = {"XDG_RUNTIME_DIR": "/run/user/7"}
    assert control_path.default_path("/srv/app.pid", environ, 7, 4242) == "/srv/app.ctl"


def test_default_path_is_the_pid_in_the_runtime_dir() -> None:
    environ = {"XDG_RUNTIME_DIR": "/run/user/7"}
    assert control_path.default_path(None, environ, 7, 4242) == "/run/user/7/prefork/4242.ctl"
    assert control_path.default_path(None, {}, 7, 4242) == "/tmp/prefork-7/4242.ctl"


@pytest.fixture
def wide_umask() -> Iterator[None]:
    """A umask that takes the owner's bits too: the directory must still end up 0700."""
    old = os.umask(0o277)
    yield
    os.umask(old)


@pytest.mark.usefixtures("wide_umask")
def test_a_missing_directory_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "prefork"
    control_path.ensure_private_dir(str(path), UID)
    assert path.is_dir()
    assert path.stat().st_mode & 0o777 == 0o700
    control_path.ensure_private_dir(str(path), UID)  # there already: fine


def test_a_directory_that_cannot_be_made(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "prefork"
    with pytest.raises(ConfigError) as caught:
        control_path.ensure_private_dir(str(path), UID)
    assert str(caught.value) == (
        f"cannot create the control socket's directory {path}: No such file or directory; "
        "or choose the socket's path with --control PATH"
    )


def test_a_file_in_the_way(tmp_path: Path) -> None:
    path = tmp_path / "prefork"
    path.write_text("")
    with pytest.raises(ConfigError) as caught:
        control_path.ensure_private_dir(str(path), UID)
    assert str(caught.value) == (
        f"{path} is in the way of the control socket's directory (not a directory); "
        "remove it, or choose the socket's path with --control PATH"
    )


def test_a_symlink_is_not_a_directory(tmp_path: Path) -> None:
    """Someone else's link in /tmp could point anywhere: refused, even to a good directory."""
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "prefork"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="not a directory"):
        control_path.ensure_private_dir(str(link), UID)


def test_a_directory_of_another_user(tmp_path: Path) -> None:
    path = tmp_path / "prefork"
    path.mkdir(mode=0o700)
    with pytest.raises(ConfigError) as caught:
        control_path.ensure_private_dir(str(path), UID + 1)
    assert str(caught.value) == (
        f"the control socket's directory {path} belongs to uid {UID}, not to uid {UID + 1}; "
        "remove it, or choose the socket's path with --control PATH"
    )


@pytest.mark.parametrize("mode", [0o755, 0o710, 0o701, 0o777])
def test_a_directory_others_may_enter(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "prefork"
    path.mkdir()
    path.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        control_path.ensure_private_dir(str(path), UID)
    assert str(caught.value) == (
        f"the control socket's directory {path} is open to other users (mode {mode:04o}); "
        "chmod 700 it, or choose the socket's path with --control PATH"
    )


def listening(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    return sock


def test_live_sockets_of_a_missing_directory(tmp_path: Path) -> None:
    assert control_path.live_sockets(str(tmp_path / "nowhere")) == []


def test_live_sockets_are_the_ctl_sockets_that_accept(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "1.ctl"))
    stale.close()  # the file stays: its master is gone
    (tmp_path / "2.ctl").write_text("not a socket")
    live = [listening(tmp_path / name) for name in ("9.ctl", "30.ctl", "other.sock")]
    try:
        found = control_path.live_sockets(str(tmp_path))
    finally:
        for sock in live:
            sock.close()
    assert found == [str(tmp_path / "30.ctl"), str(tmp_path / "9.ctl")]

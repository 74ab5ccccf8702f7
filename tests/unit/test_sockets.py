"""Address parsing and binding (sockets on 127.0.0.1 and in a temporary folder, no fork)."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from prefork.core._options import ConfigError
from prefork.master import _sockets
from prefork.master._sockets import Address


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:8000", Address("tcp", host="127.0.0.1", port=8000)),
        (":8000", Address("tcp", host="0.0.0.0", port=8000)),
        ("localhost:80", Address("tcp", host="localhost", port=80)),
        ("[::1]:8000", Address("tcp", host="::1", port=8000)),
        ("unix:/tmp/x.sock", Address("unix", path="/tmp/x.sock")),
        ("fd://3", Address("fd", fd=3)),
        ("fd://0", Address("fd", fd=0)),
        ("127.0.0.1:08000", Address("tcp", host="127.0.0.1", port=8000)),
    ],
)
def test_parse(text: str, address: Address) -> None:
    assert _sockets.parse(text) == address


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1", "no valid port"),
        ("127.0.0.1:http", "no valid port"),
        ("127.0.0.1:70000", "no valid port"),
        ("::1:80", r"write IPv6 addresses as \[addr\]:port"),
        ("[nope]:80", "'nope' is not IPv6"),
        ("unix:", "unix: needs a path"),
        ("fd://x", "fd:// needs a number"),
        ("fd://", "fd:// needs a number"),
        ("fd://\u00b2", "fd:// needs a number"),
        ("fd://2147483648", "fd:// needs a number"),
        ("fd://" + "9" * 5000, "fd:// needs a number"),
        ("127.0.0.1:\u00b2", "no valid port"),
        ("127.0.0.1:" + "9" * 5000, "no valid port"),
    ],
)
def test_parse_errors_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _sockets.parse(text)


def test_bind_tcp_v4_is_inheritable_and_listening() -> None:
    sock = _sockets.bind("127.0.0.1:0", 16)
    try:
        assert sock.get_inheritable()
        assert _sockets.describe(sock).startswith("127.0.0.1:")
        socket.create_connection(sock.getsockname(), timeout=2).close()
    finally:
        sock.close()


def test_bind_tcp_v6() -> None:
    try:
        sock = _sockets.bind("[::1]:0", 16)
    except ConfigError as exc:  # pragma: no cover - machines without IPv6 loopback
        pytest.skip(str(exc))
    try:
        assert sock.family == socket.AF_INET6
        assert _sockets.describe(sock).startswith("[::1]:")
    finally:
        sock.close()


def test_address_in_use_is_one_clear_line() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match="address already in use; stop what holds it"):
            _sockets.bind(f"127.0.0.1:{port}", 16)
    finally:
        holder.close()


def test_unknown_host_and_unavailable_address() -> None:
    with pytest.raises(ConfigError, match="unknown host"):
        _sockets.bind("no-such-host.invalid:80", 16)
    with pytest.raises(ConfigError, match="address not available"):
        _sockets.bind("192.0.2.1:0", 16)


def test_privileged_port_as_non_root(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def refuse(self: socket.socket, addr: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    with pytest.raises(ConfigError, match="permission denied; use a port above 1023"):
        _sockets.bind("127.0.0.1:80", 16)


def test_other_bind_errors_keep_the_system_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def refuse(self: socket.socket, addr: object) -> None:
        raise OSError(errno.ENOBUFS, "No buffer space available")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    with pytest.raises(ConfigError, match="No buffer space available"):
        _sockets.bind("127.0.0.1:0", 16)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o000, 0o666)])
def test_unix_socket_honours_the_umask_and_replaces_a_stale_file(
    tmp_path: Path, umask: int, mode: int
) -> None:
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening: what a dead master leaves behind
    stale.close()
    old = os.umask(umask)
    try:
        sock = _sockets.bind(f"unix:{path}", 16)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
        assert _sockets.describe(sock) == f"unix:{path}"
    finally:
        sock.close()


def test_unix_socket_in_use_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    live = _sockets.bind(f"unix:{path}", 16)
    try:
        with pytest.raises(ConfigError, match="a running server answers on it"):
            _sockets.bind(f"unix:{path}", 16)
    finally:
        live.close()


def test_unix_path_that_is_a_regular_file_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_text("keep me")
    with pytest.raises(ConfigError, match="already in use"):
        _sockets.bind(f"unix:{path}", 16)
    assert path.read_text() == "keep me"


def test_fd_adoption() -> None:
    given = socket.socket()
    given.bind(("127.0.0.1", 0))
    sock = _sockets.bind(f"fd://{given.fileno()}", 16)
    try:
        assert sock.fileno() == given.fileno() and sock.get_inheritable()
        socket.create_connection(sock.getsockname(), timeout=2).close()  # listening now
    finally:
        sock.detach()
        given.close()


def test_fd_that_is_not_a_usable_socket() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(ConfigError, match=r"cannot use 'fd://\d+'"):
            _sockets.bind(f"fd://{r}", 16)
    finally:
        os.close(r)
        os.close(w)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ConfigError, match="not a stream socket"):
            _sockets.bind(f"fd://{udp.fileno()}", 16)
    finally:
        udp.close()
    connected = socket.socket()
    server = _sockets.bind("127.0.0.1:0", 4)
    try:
        connected.connect(server.getsockname())
        with pytest.raises(ConfigError, match="cannot use"):
            _sockets.bind(f"fd://{connected.fileno()}", 16)
    finally:
        connected.close()
        server.close()


def test_systemd_fds() -> None:
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "2"}
    assert _sockets.systemd_fds(env, 42) == ["fd://3", "fd://4"]
    assert _sockets.systemd_fds(env, 43) == []
    assert _sockets.systemd_fds({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, 42) == []


def test_describe_gives_urls_for_a_scheme() -> None:
    sock = _sockets.bind("127.0.0.1:0", 8)
    try:
        port = sock.getsockname()[1]
        assert _sockets.describe(sock) == f"127.0.0.1:{port}"
        assert _sockets.describe(sock, "http") == f"http://127.0.0.1:{port}"
    finally:
        sock.close()


def test_listen_queue_of_tcp_listeners_only() -> None:
    sock = _sockets.bind("127.0.0.1:0", 77)
    port = sock.getsockname()[1]
    waiting = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    assert _sockets.listen_queue(sock) == (3, 77)
    for conn in waiting:
        conn.close()
    sock.close()
    assert _sockets.listen_queue(sock) is None  # closed: the kernel tells nothing
    with socket.socket(socket.AF_UNIX) as unix:
        assert _sockets.listen_queue(unix) is None

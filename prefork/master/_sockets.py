"""Listening sockets, bound once by the master before any fork and inherited by workers.

One shared socket per address (not one SO_REUSEPORT socket per worker): when a worker dies,
connections queued on the socket wait for the others instead of being reset.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefork.core._options import ConfigError

UNIX_MODE = 0o666  # read-write for all, less the process umask (as a created file gets)
SD_LISTEN_FDS_START = 3
MAX_FD = (1 << 31) - 1  # a file descriptor is a C int


@dataclass(frozen=True, slots=True)
class Address:
    kind: str  # "tcp", "unix" or "fd"
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1


def parse(text: str) -> Address:
    """Parse ``host:port``, ``[v6]:port``, ``unix:/path`` or ``fd://N``; ``ConfigError`` if bad."""
    hint = "use host:port, [v6addr]:port, unix:/path or fd://N"
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ConfigError(f"bad address {text!r}: unix: needs a path; {hint}")
        return Address("unix", path=path)
    if text.startswith("fd://"):
        fd = _number(text[5:], MAX_FD)
        if fd is None:
            raise ConfigError(f"bad address {text!r}: fd:// needs a number; {hint}")
        return Address("fd", fd=fd)
    host, sep, digits = text.rpartition(":")
    port = _number(digits, 65535)
    if not sep or port is None:
        raise ConfigError(f"bad address {text!r}: no valid port; {hint}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"bad address {text!r}: {host!r} is not IPv6; {hint}") from None
    elif ":" in host:
        raise ConfigError(f"bad address {text!r}: write IPv6 addresses as [addr]:port")
    return Address("tcp", host=host or "0.0.0.0", port=port)


def _number(text: str, most: int) -> int | None:
    """``text`` as a whole number of ASCII digits up to ``most``, else None."""
    digits = text.lstrip("0") or "0"
    if not text.isascii() or not text.isdigit() or len(digits) > len(str(most)):
        return None
    return int(digits) if int(digits) <= most else None


def bind(text: str, backlog: int) -> socket.socket:
    """Bind and listen on an address; the socket is inheritable by forked workers.

    Raises ``ConfigError`` with a one-line reason when the address cannot be used.
    """
    addr = parse(text)
    if addr.kind == "fd":
        return _adopt(text, addr.fd, backlog)
    if addr.kind == "unix":
        return _bind_unix(text, addr.path, backlog)
    try:
        infos = socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot bind {text!r}: unknown host ({exc.strerror})") from None
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    _bind_listen(sock, text, sockaddr, backlog)
    return sock


def _bind_unix(text: str, path: str, backlog: int) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            _refuse_if_served(text, path)
            os.unlink(path)  # a stale socket left by a master that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _bind_listen(sock, text, path, backlog)
    os.chmod(path, UNIX_MODE & ~current_umask())
    return sock


def current_umask() -> int:
    """The process umask (reading it means setting it: put it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _refuse_if_served(text: str, path: str) -> None:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return
    finally:
        probe.close()
    raise ConfigError(f"cannot bind {text!r}: a running server answers on it; stop it first")


def _bind_listen(sock: socket.socket, text: str, sockaddr: Any, backlog: int) -> None:
    try:
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind {text!r}: {_reason(exc)}") from None
    sock.set_inheritable(True)


def _reason(exc: OSError) -> str:
    import errno

    if exc.errno == errno.EADDRINUSE:
        return "address already in use; stop what holds it or choose another address"
    if exc.errno == errno.EACCES:
        return "permission denied; use a port above 1023 or another path"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    return exc.strerror or str(exc)


def _adopt(text: str, fd: int, backlog: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError(f"cannot use {text!r}: {exc.strerror}; pass an open socket") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ConfigError(f"cannot use {text!r}: not a stream socket")
    try:
        sock.listen(backlog)
    except OSError as exc:
        sock.detach()
        raise ConfigError(f"cannot use {text!r}: {_reason(exc)}") from None
    sock.set_inheritable(True)
    return sock


def systemd_fds(env: Mapping[str, str], pid: int) -> list[str]:
    """``fd://N`` addresses handed over by systemd socket activation (LISTEN_FDS), if any."""
    if env.get("LISTEN_PID") != str(pid):
        return []
    count = env.get("LISTEN_FDS", "")
    n = int(count) if count.isdigit() else 0
    return [f"fd://{SD_LISTEN_FDS_START + i}" for i in range(n)]


def bind_private(path: str) -> socket.socket:
    """Listen on the unix socket ``path`` with mode 0600 from the start (no moment at which
    another user could connect: the control socket). A stale socket left there by a master
    that died is replaced; a live one is a ``ConfigError``."""
    old = os.umask(0o177)
    try:
        return bind(f"unix:{path}", 16)
    finally:
        os.umask(old)


def describe(sock: socket.socket, scheme: str = "") -> str:
    """The address a socket listens on, for logs: ``127.0.0.1:8000``, ``[::1]:80``, a path;
    with a ``scheme``, a TCP address as a URL (``http://127.0.0.1:8000``)."""
    name = sock.getsockname()
    if isinstance(name, str | bytes):
        return f"unix:{os.fsdecode(name)}"
    host, port = name[0], name[1]
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{scheme}://{where}" if scheme else where


_TCP_INFO = struct.Struct("8B16xII")  # struct tcp_info up to tcpi_unacked, tcpi_sacked


def listen_queue(sock: socket.socket) -> tuple[int, int] | None:
    """A TCP listener's accept queue: connections waiting now and the most it holds (Linux
    reports them as ``tcpi_unacked`` and ``tcpi_sacked``); None for other sockets."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    except OSError:
        return None
    *_, waiting, most = _TCP_INFO.unpack(info[: _TCP_INFO.size])
    return waiting, most


def close_listener(sock: socket.socket) -> None:
    """Close a listening socket; a unix socket's file goes with it."""
    if sock.family == socket.AF_UNIX:
        path = sock.getsockname()
        if path and os.path.exists(path):
            os.unlink(path)
    sock.close()


LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class TurnedAway:
    """A drained broker's listener, served by the master: each connection gets the worker
    type's ``drained_reply`` (or a reset) and is closed at once, a bounded number per turn."""

    PER_TURN = 64

    def __init__(self, reply: bytes) -> None:
        self.reply = reply

    def accept(self, listener: socket.socket) -> None:
        for _ in range(self.PER_TURN):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            with conn:
                conn.setblocking(False)
                with contextlib.suppress(OSError):
                    if self.reply:
                        conn.send(self.reply)
                    else:
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)

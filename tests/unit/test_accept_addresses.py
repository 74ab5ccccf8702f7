"""What the acceptor hands uvloop and the protocol: the accepted fd (``AcceptedFd``: who
closes it) and the connection's addresses, known without asking the transport. Real uvloop
transports on loopback and a Unix socket, in this process (no fork)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import uvloop
from _http_fakes import fd_is_open, hello_app

from prefork.http import _connection
from prefork.http._accept import AcceptedFd, Acceptor, Share, fixed_server_address
from prefork.http._config import HTTPConfig
from prefork.http._connection import HTTPProtocol
from prefork.http._scope import client_address, server_address
from prefork.http._state import ServerState


def test_names_become_asgi_addresses() -> None:
    assert server_address(("127.0.0.1", 80)) == ("127.0.0.1", 80)
    assert server_address(("::1", 80, 0, 0)) == ("::1", 80)
    assert server_address("/run/app.sock") == ("/run/app.sock", None)
    assert server_address("") is None and server_address(None) is None
    assert client_address(("10.0.0.1", 5000)) == ("10.0.0.1", 5000)
    assert client_address(("::1", 5000, 0, 0)) == ("::1", 5000)
    assert client_address("") is None  # a Unix socket's peer has no address


@pytest.mark.parametrize(
    ("family", "host", "fixed"),
    [
        (socket.AF_INET, "127.0.0.1", True),
        (socket.AF_INET, "0.0.0.0", False),  # the address dialled: asked per connection
        (socket.AF_INET6, "::1", True),
        (socket.AF_INET6, "::", False),
    ],
)
def test_a_listener_bound_to_one_address_gives_it_to_every_connection(
    family: socket.AddressFamily, host: str, fixed: bool
) -> None:
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
        assert fixed_server_address(sock) == ((host, port) if fixed else None)


def test_a_unix_listener_gives_its_path(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "s"))
        assert fixed_server_address(sock) == (str(tmp_path / "s"), None)


def test_accepted_fd_is_closed_by_whoever_holds_it() -> None:
    """Before uvloop takes the fd (``fileno()``), ``close()`` closes it; after, uvloop's
    transport closes it, and a later ``close()`` must not close the fd number again: it may
    already be another connection's."""
    left, right = socket.socketpair()
    right.close()
    unserved = AcceptedFd(left.detach(), socket.AF_UNIX)
    unserved.close()
    assert not fd_is_open(unserved.fd)
    unserved.close()  # twice: nothing more

    async def serve() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        conn = AcceptedFd(a.detach(), socket.AF_UNIX)
        transport, _ = await loop.connect_accepted_socket(
            asyncio.Protocol,
            conn,  # type: ignore[arg-type]  # what uvloop reads of a socket
        )
        transport.close()
        deadline = loop.time() + 5  # uvloop closes the fd a loop turn or two later, then
        while fd_is_open(conn.fd) and loop.time() < deadline:  # calls conn.close()
            await asyncio.sleep(0)
        closed = not fd_is_open(conn.fd)
        other = os.open(os.devnull, os.O_RDONLY)  # the lowest free number: likely the same
        if other != conn.fd:
            os.dup2(other, conn.fd)  # the number is another file's now, whatever the kernel
            os.close(other)  # gave
        conn.close()
        still_open = fd_is_open(conn.fd)
        os.close(conn.fd)
        b.close()
        return closed, still_open

    assert uvloop.run(serve()) == (True, True)


def test_a_protocol_that_cannot_be_made_leaves_no_fd_open() -> None:
    def broken() -> asyncio.Protocol:
        raise RuntimeError("no protocol")

    async def serve() -> int:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        conn = AcceptedFd(a.detach(), socket.AF_UNIX)
        with pytest.raises(RuntimeError):
            await loop.connect_accepted_socket(broken, conn)  # type: ignore[arg-type]
        assert not conn.taken  # uvloop never took it
        conn.close()
        b.close()
        return conn.fd

    assert not fd_is_open(uvloop.run(serve()))


async def _scope_addresses(sock: socket.socket, connect: Callable[[], Any]) -> tuple[Any, Any, Any]:
    """Serve one request on ``sock`` through an ``Acceptor``: the scope's ``server`` and
    ``client``, and the client's own address."""
    loop = asyncio.get_running_loop()
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        await hello_app(scope, receive, send)

    state = ServerState(HTTPConfig(app="x:app"), app, loop)
    sock.setblocking(False)
    share = Share(None, 0, ())
    acceptor = Acceptor(loop, sock, partial(HTTPProtocol, state), share, tls={})
    acceptor.start()
    reader, writer = await connect()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200 ")
    peer = writer.get_extra_info("sockname")
    writer.close()
    acceptor.close()
    return scopes[0]["server"], scopes[0]["client"], peer


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the protocol asked its transport (``connection_made``'s fallback)."""
    names: list[str] = []

    def recorded(name: str, convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def ask(value: Any) -> Any:
            names.append(name)
            return convert(value)

        return ask

    monkeypatch.setattr(_connection, "server_address", recorded("sockname", server_address))
    monkeypatch.setattr(_connection, "client_address", recorded("peername", client_address))
    return names


def test_a_loopback_connection_asks_its_transport_nothing(asked: list[str]) -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server, client, peer = uvloop.run(
        _scope_addresses(sock, lambda: asyncio.open_connection("127.0.0.1", port))
    )
    assert (server, client, asked) == (("127.0.0.1", port), peer, [])


def test_a_wildcard_bind_asks_for_the_address_dialled(asked: list[str]) -> None:
    sock = socket.create_server(("0.0.0.0", 0))
    port = sock.getsockname()[1]
    server, client, peer = uvloop.run(
        _scope_addresses(sock, lambda: asyncio.open_connection("127.0.0.1", port))
    )
    assert (server, client, asked) == (("127.0.0.1", port), peer, ["sockname"])


def test_a_unix_socket_has_its_path_and_no_client(tmp_path: Path, asked: list[str]) -> None:
    path = str(tmp_path / "app.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen()
    server, client, _ = uvloop.run(
        _scope_addresses(sock, lambda: asyncio.open_unix_connection(path))
    )
    # accept() gave no address: the transport is asked, and there is none
    assert (server, client, asked) == ((path, None), None, ["peername"])

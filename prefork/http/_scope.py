"""The ASGI ``http`` scope of a request: its path decoded and under ``root_path``, and the
client and scheme that trusted proxies forwarded (``X-Forwarded-For``/``-Proto``). A
WebSocket's scope starts from it (``_ws_handshake.websocket_scope``), and so does a WSGI
environ (``_wsgi_environ``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from prefork.http._state import ServerState


#: The ASGI ``client`` of a connection: (host, port).
ClientAddress = tuple[str, int]
#: The ASGI ``server``: (host, port), or (path, None) for a Unix socket.
ServerAddress = tuple[str, int | None]


def server_address(name: Any) -> ServerAddress | None:
    """The ASGI ``server`` of a ``getsockname()`` result (an IPv6 one has 4 items)."""
    if isinstance(name, tuple):
        return name[:2]  # (str, int) already: a whole slice is the tuple itself
    return (str(name), None) if name else None


def client_address(name: Any) -> ClientAddress | None:
    """The ASGI ``client`` of a ``getpeername()`` (or ``accept()``) result: None for a Unix
    socket's peer, which has no address."""
    return name[:2] if isinstance(name, tuple) else None


def build_scope(
    state: ServerState,
    server: ServerAddress | None,
    client: ClientAddress | None,
    method: bytes,
    target: bytes,
    http_version: bytes,
    headers: list[tuple[bytes, bytes]],
) -> dict[str, Any]:
    """The ASGI ``http`` scope of a request (``target`` in origin-form or ``*``)."""
    raw_path, _, query = target.partition(b"?")
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    root = state.config.root_path
    if root:
        path = root + path
        raw_path = root.encode() + raw_path
    scheme = state.scheme
    if state.config.proxy_headers and state.trusts(client[0] if client else None):
        client, scheme = _forwarded(headers, client, scheme, state.trusts)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1" if http_version == b"1.1" else "1.0",
        "server": server,
        "client": client,
        "scheme": scheme,
        "method": method.decode("ascii"),
        "root_path": root,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": headers.copy(),  # the app's own: the list may be a memo's (``_parse``)
        "state": state.lifespan_state.copy(),
    }


def _forwarded(
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    scheme: str,
    trusts: Callable[[str | None], bool],
) -> tuple[tuple[str, int] | None, str]:
    for name, value in headers:
        if name == b"x-forwarded-proto":
            proto = value.decode("latin-1").strip().lower()
            if proto in ("http", "https"):
                scheme = proto
        elif name == b"x-forwarded-for":
            hosts = [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
            # The nearest untrusted hop is the client; if every hop is trusted, the first one.
            for host in reversed(hosts):
                if not trusts(host):
                    client = (host, 0)
                    break
            else:
                if hosts:
                    client = (hosts[0], 0)
    return client, scheme

"""The metrics endpoint (``--metrics-bind``): ``GET /metrics`` in the Prometheus text format,
served by the master, whose totals outlive every worker.

HTTP/1.1 reduced to what a scraper sends: one request per connection, answered with
``Connection: close``. Anything else gets a short 4xx; nothing a client sends can block the
master or grow its memory (``SideServer``'s bounds).
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable

from prefork._side import Peer, SideServer

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_HINT = b"prefork metrics: GET /metrics\n"


def response(
    status: bytes, body: bytes, content_type: bytes = b"text/plain; charset=utf-8"
) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type
        + b"\r\ncontent-length: " + str(len(body)).encode()
        + b"\r\nconnection: close\r\n\r\n" + body
    )  # fmt: skip


def answer(head: bytes, render: Callable[[], str]) -> bytes:
    """The response to a request ``head`` (its bytes up to the blank line)."""
    line = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return response(b"400 Bad Request", b"a request line is: GET /metrics HTTP/1.1\n")
    method, target, _ = parts
    if method not in (b"GET", b"HEAD"):
        return response(b"405 Method Not Allowed", _HINT)
    path = target.split(b"?", 1)[0]
    if path == b"/metrics":
        reply = response(b"200 OK", render().encode(), CONTENT_TYPE)
    elif path == b"/":
        reply = response(b"200 OK", _HINT)
    else:
        reply = response(b"404 Not Found", _HINT)
    if method == b"HEAD":
        reply = reply[: reply.index(b"\r\n\r\n") + 4]
    return reply


class MetricsEndpoint(SideServer):
    """Answers each connection's one request with ``answer``, then closes it."""

    MAX_INPUT = 8192  # a request head; a scraper's is a few hundred bytes
    IDLE_TIMEOUT = 5.0

    def __init__(
        self,
        listener: socket.socket,
        selector: selectors.BaseSelector,
        render: Callable[[], str],
    ) -> None:
        super().__init__(listener, selector)
        self._render = render

    def received(self, peer: Peer) -> None:
        data = bytes(peer.input)
        end = data.find(b"\r\n\r\n")
        if end < 0:
            end = data.find(b"\n\n")
        if end >= 0:
            self.send(peer, answer(data[:end], self._render), close=True)

    def overflowed(self, peer: Peer) -> None:
        self.send(peer, response(b"431 Request Header Fields Too Large", b"head too large\n"))

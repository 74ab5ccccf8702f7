"""The metrics endpoint (``--metrics-bind``): ``GET /metrics`` in the Prometheus text format,
served by the master, whose totals outlive every worker.

HTTP/1.1 reduced to what a scraper sends: one request per connection, answered with
``Connection: close``. The exposition is rendered piece by piece as the socket takes it and
sent chunked (close-delimited to an HTTP/1.0 client), so a scrape of any size costs the master
one piece of memory at a time, and a scraper can tell a cut-short answer from a whole one.
Anything else gets a short 4xx; nothing a client sends can block the master or grow its memory
(``SideServer``'s bounds).
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping

from prefork.ops._health import readyz_body
from prefork.ops._side import Peer, SideServer

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: What renders the exposition: called when a scrape's request is whole, it returns the
#: pieces of the text, to be made one at a time.
Render = Callable[[], Iterable[str]]
#: Why each listening broker cannot take traffic now (``_health.readiness``; empty: ready).
Ready = Callable[[], Mapping[str, str]]


def response(
    status: bytes, body: bytes, content_type: bytes = b"text/plain; charset=utf-8"
) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type
        + b"\r\ncontent-length: " + str(len(body)).encode()
        + b"\r\nconnection: close\r\n\r\n" + body
    )  # fmt: skip


def answer(
    head: bytes, render: Render | None, ready: Ready
) -> tuple[bytes, Iterator[bytes] | None]:
    """The response to a request ``head`` (its bytes up to the blank line): its first bytes,
    and for a scrape the pieces of its body, made as they are sent. ``render`` None: no
    ``/metrics`` here (``--health-bind``)."""
    hint = b"prefork health: GET /livez, /readyz\n"
    if render is not None:
        hint = b"prefork metrics: GET /metrics, /livez, /readyz\n"
    line = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return response(b"400 Bad Request", b"a request line is: GET /metrics HTTP/1.1\n"), None
    method, target, version = parts
    if method not in (b"GET", b"HEAD"):
        return response(b"405 Method Not Allowed", hint), None
    path = target.split(b"?", 1)[0]
    if path == b"/livez":  # answered at all: the master's loop turns
        reply = response(b"200 OK", b"ok\n")
    elif path == b"/readyz":
        reasons = ready()
        status = b"503 Service Unavailable" if reasons else b"200 OK"
        reply = response(status, readyz_body(reasons), b"application/json")
    elif path == b"/":
        reply = response(b"200 OK", hint)
    elif path != b"/metrics" or render is None:
        reply = response(b"404 Not Found", hint)
    else:
        chunked = version != b"HTTP/1.0"  # a 1.0 client reads to the close
        framing = b"transfer-encoding: chunked\r\n" if chunked else b""
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: " + CONTENT_TYPE
            + b"\r\n" + framing + b"connection: close\r\n\r\n"
        )  # fmt: skip
        if method == b"HEAD":
            return head, None
        return head, _pieces(render(), chunked)
    if method == b"HEAD":
        reply = reply[: reply.index(b"\r\n\r\n") + 4]
    return reply, None


def _pieces(text: Iterable[str], chunked: bool) -> Iterator[bytes]:
    for piece in text:
        data = piece.encode()
        if not chunked:
            yield data
        elif data:  # an empty chunk would end the body
            yield b"%x\r\n" % len(data) + data + b"\r\n"
    if chunked:
        yield b"0\r\n\r\n"


class MetricsEndpoint(SideServer):
    """Answers each connection's one request with ``answer``, then closes it: the metrics
    and the health probes (``--metrics-bind``)."""

    NAME = "metrics endpoint"
    MAX_INPUT = 8192  # a request head; a scraper's is a few hundred bytes
    IDLE_TIMEOUT = 5.0
    REQUEST_TIMEOUT = 5.0

    def __init__(
        self,
        listener: socket.socket,
        selector: selectors.BaseSelector,
        render: Render | None,
        ready: Ready,
    ) -> None:
        super().__init__(listener, selector)
        self._render = render
        self._ready = ready

    def received(self, peer: Peer) -> None:
        data = bytes(peer.input)
        end = data.find(b"\r\n\r\n")
        if end < 0:
            end = data.find(b"\n\n")
        if end >= 0:
            first, rest = answer(data[:end], self._render, self._ready)
            self.send(peer, first, close=True, rest=rest)

    def overflowed(self, peer: Peer) -> None:
        self.send(peer, response(b"431 Request Header Fields Too Large", b"head too large\n"))


class HealthEndpoint(MetricsEndpoint):
    """``--health-bind``: the probes alone, for those who want them without the metrics."""

    NAME = "health endpoint"

    def __init__(
        self, listener: socket.socket, selector: selectors.BaseSelector, ready: Ready
    ) -> None:
        super().__init__(listener, selector, None, ready)

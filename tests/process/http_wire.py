"""A raw HTTP/1.1 client for comparing servers byte for byte: it sends the bytes it is given
and reads each response exactly as framed (Content-Length, chunked, or to the close), keeping
the bytes as they came."""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Response:
    status_line: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # names and values as sent, in order
    body: bytes  # as framed on the wire: chunk sizes and trailers included

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return b", ".join(values) if values else None

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])


class Reader:
    """Reads responses off one connection (``sock``), keeping what comes after each."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise ConnectionError(f"closed {n - len(self.buf)} bytes short")
        taken, self.buf = self.buf[:n], self.buf[n:]
        return taken

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._more():
                raise ConnectionError(f"closed inside a line: {self.buf[:200]!r}")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def response(self, method: str = "GET") -> Response:
        """The next response (to a request of ``method``); ConnectionError if the connection
        closes before a whole one."""
        status_line = self._line()
        headers = []
        while line := self._line():
            name, _, value = line.partition(b":")
            headers.append((name, value.strip()))
        response = Response(status_line, tuple(headers), b"")
        code = response.status
        if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
            return response
        if (response.header(b"transfer-encoding") or b"").lower() == b"chunked":
            body = self._chunked()
        elif (length := response.header(b"content-length")) is not None:
            body = self._take(int(length))
        else:
            while self._more():
                pass
            body, self.buf = self.buf, b""
        return Response(status_line, response.headers, body)

    def _chunked(self) -> bytes:
        raw = b""
        while True:
            size_line = self._line()
            raw += size_line + b"\r\n"
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            raw += self._take(size + 2)
        while trailer := self._line():  # trailer fields, then the empty line
            raw += trailer + b"\r\n"
        return raw + b"\r\n"


def exchange(port: int, request: bytes, method: str = "GET", timeout: float = 10.0) -> Response:
    """Send ``request`` on a new connection to 127.0.0.1:``port``; its one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return Reader(sock).response(method)


def conversation(
    port: int, requests: bytes, methods: list[str], later: bytes = b"", timeout: float = 10.0
) -> list[Response]:
    """Send ``requests`` (one or more, pipelined) on a new connection, and ``later`` once the
    first interim (1xx) response came (a body after ``100 Continue``); every response, the
    interim ones included, in order."""
    got = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(requests)
        reader = Reader(sock)
        for method in methods:
            while (response := reader.response(method)).status < 200:
                got.append(response)
                if later:
                    sock.sendall(later)
                    later = b""
            got.append(response)
    return got


def dechunk(raw: bytes) -> bytes:
    """The payload of a chunked body as ``Reader`` keeps it."""
    out, rest = b"", raw
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out, rest = out + rest[:size], rest[size + 2 :]

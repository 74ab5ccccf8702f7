"""Raw bytes the benchmarks speak to a server, where a client library would hide what goes on
the wire or refuse to send it: one HTTP/1.1 response read off a socket, a WebSocket frame."""

from __future__ import annotations

import re
import socket

#: A keep-alive GET /.
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def read_response(sock: socket.socket, buf: bytes = b"") -> tuple[int, bytes, bytes]:
    """Read one response with a Content-Length body, ``buf`` being what was read before it:
    (status, body, what came after the body)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        rest += chunk
    return int(head.split(b" ", 2)[1]), rest[:length], rest[length:]


def frame(
    opcode: int, payload: bytes, mask: bytes | None, *, fin: bool = True, rsv1: bool = False
) -> bytes:
    """One WebSocket frame (RFC 6455, section 5.2): a client's, masked with ``mask``, or a
    server's (``mask`` None). ``rsv1`` marks a compressed message (RFC 7692)."""
    size = len(payload)
    if size < 126:
        length = bytes([size])
    elif size < 1 << 16:
        length = bytes([126]) + size.to_bytes(2, "big")
    else:
        length = bytes([127]) + size.to_bytes(8, "big")
    first = bytes([fin << 7 | rsv1 << 6 | opcode])
    if mask is None:
        return first + length + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return first + bytes([0x80 | length[0]]) + length[1:] + mask + masked

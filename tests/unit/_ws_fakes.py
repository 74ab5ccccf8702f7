"""Test doubles for WebSockets: the upgrade request, a harness whose bytes go to whichever
protocol holds the transport, and a wsproto client to make the client's frames and read ours
(an independent check of our framing)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from _http_fakes import Harness, request, split
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Event
from wsproto.extensions import Extension

#: RFC 6455 section 1.3's example key, and the accept token it gives.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
TEXT, BINARY, CONTINUATION = 0x1, 0x2, 0x0


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A client frame built by hand (what no client library would send), masked with a zero
    key (RFC 6455 allows any key) so that the payload goes as is."""
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 1 << 16:
        length = bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return bytes([fin << 7 | opcode]) + length + b"\0\0\0\0" + payload


def upgrade(target: str = "/", *headers: str, key: str = KEY, version: str = "13") -> bytes:
    return request(
        "GET",
        target,
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Version: {version}",
        *headers,
    )


class WSHarness(Harness):
    """A ``Harness`` that opens a WebSocket and talks to it with a wsproto client."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.client: Connection | None = None
        self._seen = 0  # of the transport's output, what the client has parsed
        self.kernel: deque[bytes] = deque()  # what ``stream`` sent and was not read yet

    def feed(self, data: bytes, how: str = "whole", seed: int = 0) -> None:
        for piece in split(data, how, seed):
            if self.transport.closed:
                return
            self.transport.protocol.data_received(piece)

    def stream(self, pieces: Iterable[bytes], check: Callable[[], None] = lambda: None) -> None:
        """Send ``pieces`` as a kernel would deliver them: the protocol reads them while its
        reading is not paused, and the rest waits (``pump`` reads on). ``check`` runs after
        each read."""
        self.kernel.extend(pieces)
        self.pump(check)

    def pump(self, check: Callable[[], None] = lambda: None) -> None:
        transport = self.transport
        while self.kernel and transport.reading and not transport.closed:
            transport.protocol.data_received(self.kernel.popleft())
            check()

    @property
    def socket(self) -> Any:
        """The protocol holding the transport (the WebSocket one after the upgrade)."""
        return self.transport.protocol

    async def open(self, *headers: str, extensions: list[Extension] | None = None) -> bytes:
        """Send the upgrade request, let the app accept; return the 101 head."""
        self.feed(upgrade("/chat?x=1", *headers))
        await self.until(lambda: b"\r\n\r\n" in self.out)
        head, _, _ = self.out.partition(b"\r\n\r\n")
        self._seen = len(head) + 4
        for line in head.split(b"\r\n"):
            if line.startswith(b"sec-websocket-extensions: "):
                for extension in extensions or ():
                    extension.finalize(line.split(b": ", 1)[1].decode())  # as a client does
        self.client = Connection(ConnectionType.CLIENT, extensions)
        return head

    def send(self, event: Event, how: str = "whole") -> None:
        assert self.client is not None
        self.feed(self.client.send(event), how)

    def events(self) -> list[Event]:
        """The events our new output gives the client."""
        assert self.client is not None
        new = self.out[self._seen :]
        self._seen += len(new)
        if new:
            self.client.receive_data(new)
        return list(self.client.events())

"""Test doubles for WebSockets: the upgrade request, a harness whose bytes go to whichever
protocol holds the transport, and a wsproto client to make the client's frames and read ours
(an independent check of our framing)."""

from __future__ import annotations

from typing import Any

from _http_fakes import Harness, request
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Event
from wsproto.extensions import Extension

#: RFC 6455 section 1.3's example key, and the accept token it gives.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


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

    def feed(self, data: bytes, how: str = "whole", seed: int = 0) -> None:
        from _http_fakes import split

        for piece in split(data, how, seed):
            if self.transport.closed:
                return
            self.transport.protocol.data_received(piece)

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

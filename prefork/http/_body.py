"""Request body readers: the bytes after a head in, the body's pieces out, then what follows it
(the next pipelined request).

A Content-Length body needs no parser: ``LengthBody`` counts. A chunked body goes through
h11, the reference parser, behind our ``ChunkScanner`` (``ChunkedBody``). Both give the same
answer to ``take()``: the pieces of body data received so far, and whether the body ended.
"""

from __future__ import annotations

import h11

from prefork.http._lines import ChunkScanner, Refused


class LengthBody:
    """The next ``remaining`` bytes of the connection; what comes after them is ``rest``."""

    __slots__ = ("pending", "remaining", "rest")

    def __init__(self, length: int, data: bytes | bytearray) -> None:
        self.remaining = length
        self.pending: list[bytes | bytearray] = [data] if data else []
        self.rest: bytes | bytearray = b""

    def feed(self, data: bytes) -> None:
        self.pending.append(data)

    def take(self) -> tuple[list[bytes], bool]:
        """The body bytes received since the last call, and whether the body is complete."""
        pieces: list[bytes] = []
        pending = self.pending
        while pending and self.remaining:
            data = pending.pop(0)
            if len(data) <= self.remaining:
                self.remaining -= len(data)
                pieces.append(bytes(data))
            else:
                pieces.append(bytes(data[: self.remaining]))
                pending.insert(0, data[self.remaining :])
                self.remaining = 0
        if self.remaining:
            return pieces, False
        self.rest = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        return pieces, True


class ChunkedBody:
    """A chunked body: ``scanner`` checks the raw framing first, h11 (``parser``, which parsed
    the head) de-chunks it."""

    __slots__ = ("parser", "rest", "scanner")

    def __init__(self, parser: h11.Connection, scanner: ChunkScanner) -> None:
        self.parser = parser
        self.scanner = scanner
        self.rest = b""

    def feed(self, data: bytes) -> None:
        self.scanner.feed(data)
        self.parser.receive_data(data)

    def take(self) -> tuple[list[bytes], bool]:
        """Like ``LengthBody.take``. Raises ``Refused`` for a body h11 finds malformed."""
        parser = self.parser
        pieces: list[bytes] = []
        try:
            while True:
                event = parser.next_event()
                if type(event) is h11.Data:
                    pieces.append(bytes(event.data))
                elif type(event) is h11.EndOfMessage:
                    self.rest = parser.trailing_data[0]
                    return pieces, True
                else:
                    return pieces, False  # NEED_DATA
        except h11.RemoteProtocolError as exc:
            raise Refused(exc.error_status_hint, b"Invalid HTTP request body.\n") from None

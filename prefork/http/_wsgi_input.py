"""``wsgi.input``: the request body as a file the app reads from its thread, streamed.

The bytes come from ``take`` (``WSGICycle.take_body``): each call gives what the connection has
received so far, blocking the thread until something comes, and ``b""`` at the end of the body
(the connection has already counted a Content-Length body and de-chunked a chunked one, so
reading past the end is never possible: ``wsgi.input_terminated``). Nothing is read ahead of
what the app asks, beyond the pieces the connection hands over (at most ``BODY_BUFFER`` and a
read waiting), so an app that reads slowly keeps the client waiting, not memory growing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator


class WSGIInput:
    """A read-only binary file over a request body (PEP 3333's ``wsgi.input``)."""

    __slots__ = ("_buf", "_done", "_take")

    def __init__(self, take: Callable[[], bytes]) -> None:
        self._take = take
        self._buf = bytearray()
        self._done = False

    def _fill(self) -> bool:
        """Append the next piece of the body to the buffer; False at the end."""
        if self._done:
            return False
        data = self._take()
        if not data:
            self._done = True
            return False
        self._buf += data
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all the rest when ``size`` is None or negative); ``b""`` at
        the end."""
        buf = self._buf
        if size is None or size < 0:
            while self._fill():
                pass
            size = len(buf)
        elif not buf and size:
            # The common case (read(CONTENT_LENGTH) of a body already here): no copy.
            data = self._take() if not self._done else b""
            if len(data) == size:
                return data
            if not data:
                self._done = True
                return b""
            buf += data
        while len(buf) < size and self._fill():
            pass
        data = bytes(buf[:size])
        del buf[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        """The next line, its ``\\n`` kept (at most ``size`` bytes when given)."""
        buf = self._buf
        limit = -1 if size is None else size
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if 0 <= limit <= len(buf):
                end = limit
                break
            start = len(buf)
            if not self._fill():
                end = len(buf)
                break
        if 0 <= limit < end:
            end = limit
        data = bytes(buf[:end])
        del buf[:end]
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """The lines left (stopping once ``hint`` bytes were read, when given)."""
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

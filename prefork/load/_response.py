"""HTTP/1.1 responses as a load generator reads them: bytes in, one tuple per complete response
out, bodies counted rather than kept (unless asked to keep them).

Pure (h11's idea): ``feed(bytes)`` and ``feed_eof()``; no socket, no clock. It is the client's
hot path, so the common case (a whole Content-Length response in one read) takes one search
for the end of the head, one cached look-up of what that head says, and no copy of the body.
What a head says depends on its bytes alone, so it is cached: a server sends the same head
again and again, changing only its Date once a second. Faster still, the echo: a read that is
byte for byte the last read that was one whole response, fed to a parser between responses,
is that response again (one comparison of bytes; a server's Date changes it once a second).

Rule: a malformed response or one over a limit raises ``ValueError``, after which the parser
is done with that connection (the caller counts a "read" error and reconnects).
"""

from __future__ import annotations

import re
from enum import Enum
from functools import lru_cache

#: A response head (status line and fields, the blank line included) may not be longer.
MAX_HEAD = 65536
#: Nor a chunk-size line with its extensions.
MAX_CHUNK_LINE = 4096
#: A kept body (``ResponseParser(keep=True)``) may not be longer.
MAX_BODY = 16 * 1024 * 1024
#: The echo remembers reads up to this long: each connection holds one, and a larger response
#: costs more than its head's parse anyway (-c 10000 of 256 KiB reads would hold 2.5 GiB).
MAX_ECHO = 4096

#: Fields as received: (name, value), names in their own case.
Headers = tuple[tuple[str, str], ...]
#: One complete response: status, bytes it took on the wire (head, interim 1xx heads and
#: chunk framing included), whether the connection stays open after it, its fields, and its
#: body (empty unless kept).
Parsed = tuple[int, int, bool, Headers, bytes]

# Framing of a head: a body length >= 0, or one of these.
_CHUNKED = -1
_UNTIL_EOF = -2

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [^\r\n]*)?\r\n")
_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*?)[ \t]*\r\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?")


class _State(Enum):
    HEAD = "waiting for a head"
    LENGTH = "in a Content-Length body"
    CHUNK_LINE = "waiting for a chunk-size line"
    CHUNK_DATA = "in a chunk's data"
    CHUNK_END = "waiting for the CRLF after a chunk"
    TRAILERS = "waiting for the trailer section"
    UNTIL_EOF = "in a body that ends when the connection closes"
    CLOSED = "done: the connection is not reused"


# The hot path compares states with `is`; module globals are found faster than class attributes.
_HEAD = _State.HEAD
_LENGTH = _State.LENGTH
_CHUNK_LINE = _State.CHUNK_LINE
_CHUNK_DATA = _State.CHUNK_DATA
_CHUNK_END = _State.CHUNK_END
_TRAILERS = _State.TRAILERS
_UNTIL_EOF_STATE = _State.UNTIL_EOF
_CLOSED = _State.CLOSED


class ResponseParser:
    """Responses of one connection, from bytes split anywhere.

    ``feed(data)`` returns the responses ``data`` completed, as ``Parsed`` tuples: 1xx interim
    responses are skipped (their bytes count toward the final one), except 101, which ends the
    connection's HTTP. Set ``head_request`` while the request answered is a HEAD (its response
    has no body). With ``keep=True`` bodies are kept, up to ``MAX_BODY`` bytes.
    """

    __slots__ = (
        "_again_head",
        "_body",
        "_buf",
        "_framing",
        "_headers",
        "_keep_alive",
        "_nbytes",
        "_remaining",
        "_scan",
        "_state",
        "_status",
        "again",
        "again_parsed",
        "head_request",
    )

    def __init__(self, *, head_request: bool = False, keep: bool = False) -> None:
        self.head_request = head_request
        self._body: bytearray | None = bytearray() if keep else None
        self._state = _HEAD
        self._buf = b""  # an unfinished head, chunk-size line, chunk end or trailer section
        self._scan = 0  # where in _buf to resume searching for its end
        self._nbytes = 0  # bytes of the current response so far
        self._remaining = 0  # of a Content-Length body or of a chunk
        self._status = 0
        self._keep_alive = True
        self._headers: Headers = ()
        #: The echo while it holds (None otherwise): a read equal to these bytes, fed now, is
        #: one whole response, ``again_parsed``, that leaves the parser between responses, as
        #: the full parser would say. It holds for the ``head_request`` it was read with (a HEAD's
        #: answer has no body): ``feed`` checks that; a caller reading it must not change it.
        self.again: bytes | None = None
        self._again_head = False
        self.again_parsed: Parsed = (0, 0, False, (), b"")

    def feed(self, data: bytes) -> list[Parsed]:
        """The responses completed by ``data``. Raises ``ValueError`` on a malformed response,
        a head over ``MAX_HEAD`` or a kept body over ``MAX_BODY``."""
        if data == self.again and self.head_request == self._again_head:
            return [self.again_parsed]
        self.again = None  # until this read leaves the parser between responses
        if self._buf:
            data = self._buf + data
            self._buf = b""
        out: list[Parsed] = []
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state is _HEAD:
                at = data.find(b"\r\n\r\n", pos + self._scan)
                if at < 0:
                    self._hold(data, pos, MAX_HEAD, 3, "response head")
                    break
                self._scan = 0
                head_end = at + 4
                if head_end - pos > MAX_HEAD:
                    raise ValueError(f"response head over {MAX_HEAD} bytes")
                head = data[pos : at + 2]
                facts = _cached_facts(head) if at - pos < _CACHED_HEAD else _facts(head)
                status, keep_alive, framing, headers = facts
                nbytes = self._nbytes + head_end - pos
                pos = head_end
                if status < 200 and status != 101:
                    self._nbytes = nbytes  # 100 Continue, 103 Early Hints: the answer follows
                    continue
                if self.head_request or status < 200 or status == 204 or status == 304:
                    framing = 0
                    keep_alive = keep_alive and status != 101
                if framing >= 0 and self._body is None and end - pos >= framing:
                    # The common case, whole in this read: no state to keep.
                    pos += framing
                    parsed = (status, nbytes + framing, keep_alive, headers, b"")
                    out.append(parsed)
                    if not keep_alive:
                        self._state = _CLOSED
                        break
                    self._nbytes = 0
                    if nbytes + framing == end <= MAX_ECHO:  # all of data, from between responses
                        self.again = data
                        self._again_head = self.head_request
                        self.again_parsed = parsed
                    continue
                self._status = status
                self._keep_alive = keep_alive
                self._headers = headers
                self._nbytes = nbytes
                if framing == _CHUNKED:
                    self._state = _CHUNK_LINE
                elif framing == _UNTIL_EOF:
                    self._state = _UNTIL_EOF_STATE
                    self._keep_alive = False
                elif framing > MAX_BODY and self._body is not None:
                    raise ValueError(f"response body over {MAX_BODY} bytes (Content-Length)")
                else:
                    self._remaining = framing
                    self._state = _LENGTH
                    if framing == 0:
                        out.append(self._done())
            elif state is _LENGTH or state is _CHUNK_DATA:
                take = min(self._remaining, end - pos)
                if self._body is not None:
                    self._keep(data, pos, pos + take)
                pos += take
                self._nbytes += take
                self._remaining -= take
                if self._remaining == 0:
                    if state is _LENGTH:
                        out.append(self._done())
                    else:
                        self._state = _CHUNK_END
            elif state is _CHUNK_LINE:
                at = data.find(b"\r\n", pos + self._scan)
                if at < 0:
                    self._hold(data, pos, MAX_CHUNK_LINE, 1, "chunk-size line")
                    break
                self._scan = 0
                match = _CHUNK_SIZE.fullmatch(data, pos, at)
                if match is None or at + 2 - pos > MAX_CHUNK_LINE:
                    raise ValueError(f"malformed chunk-size line {data[pos:at][:80]!r}")
                size = int(match[1], 16)
                self._nbytes += at + 2 - pos
                pos = at + 2
                if size == 0:
                    self._state = _TRAILERS
                else:
                    self._remaining = size
                    self._state = _CHUNK_DATA
            elif state is _CHUNK_END:
                if end - pos < 2:
                    self._buf = data[pos:]
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise ValueError(f"chunk data not followed by CRLF: {data[pos : pos + 2]!r}")
                pos += 2
                self._nbytes += 2
                self._state = _CHUNK_LINE
            elif state is _TRAILERS:
                pos = self._trailers(data, pos, end)
                if pos < 0:
                    break
                out.append(self._done())
            elif state is _UNTIL_EOF_STATE:
                if self._body is not None:
                    self._keep(data, pos, end)
                self._nbytes += end - pos
                break
            else:  # _CLOSED: what follows a response that ended the connection is not HTTP
                break
        return out

    def feed_eof(self) -> list[Parsed]:
        """The connection closed: the response this completes (one whose body runs until the
        close), or none. Raises ``ValueError`` if it cut a response short."""
        state = self._state
        self._state = _CLOSED
        self.again = None
        if state is _UNTIL_EOF_STATE:
            return [self._done()]
        if state is _CLOSED or (state is _HEAD and not self._buf and not self._nbytes):
            return []
        raise ValueError(f"the connection closed {state.value}")

    def _done(self) -> Parsed:
        body = b""
        if self._body is not None:
            body = bytes(self._body)
            self._body.clear()
        parsed = (self._status, self._nbytes, self._keep_alive, self._headers, body)
        self._nbytes = 0
        self._state = _HEAD if self._keep_alive else _CLOSED
        return parsed

    def _hold(self, data: bytes, pos: int, limit: int, overlap: int, what: str) -> None:
        """Keep an unfinished line or head for the next feed; its end is searched for from
        where this search stopped (less the ``overlap`` a split terminator may take)."""
        if len(data) - pos > limit:
            raise ValueError(f"{what} over {limit} bytes")
        self._buf = data[pos:]
        self._scan = max(0, len(self._buf) - overlap)

    def _keep(self, data: bytes, start: int, stop: int) -> None:
        assert self._body is not None
        if len(self._body) + stop - start > MAX_BODY:
            raise ValueError(f"response body over {MAX_BODY} bytes")
        self._body += memoryview(data)[start:stop]

    def _trailers(self, data: bytes, pos: int, end: int) -> int:
        """Skip the trailer section (fields are checked, then ignored); where it ends, or -1
        (it is held for the next feed)."""
        if end - pos < 2:
            self._buf = data[pos:]
            return -1
        if data[pos : pos + 2] == b"\r\n":
            self._nbytes += 2
            return pos + 2
        at = data.find(b"\r\n\r\n", pos + self._scan)
        if at < 0:
            self._hold(data, pos, MAX_HEAD, 3, "trailer section")
            return -1
        self._scan = 0
        if at + 4 - pos > MAX_HEAD:
            raise ValueError(f"trailer section over {MAX_HEAD} bytes")
        _fields(data[pos : at + 2], 0)
        self._nbytes += at + 4 - pos
        return at + 4


def _facts(head: bytes) -> tuple[int, bool, int, Headers]:
    """What a head (status line and fields, each with its CRLF) says: status, whether the
    connection stays open, framing (a body length, ``_CHUNKED`` or ``_UNTIL_EOF``), fields.

    RFC 9112 section 6.3: Transfer-Encoding wins over Content-Length; chunked as the last
    coding frames the body, any other runs until the close, and so does a body with neither.
    Raises ValueError on a malformed line or Content-Length.
    """
    status_line = _STATUS_LINE.match(head)
    if status_line is None:
        raise ValueError(f"malformed status line {_line_at(head, 0)!r}")
    fields = _fields(head, status_line.end())
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    tokens: set[bytes] = set()
    for name, value in fields:
        key = name.lower()
        if key == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif key == b"transfer-encoding":
            codings += [c.strip().lower() for c in value.split(b",") if c.strip()]
        elif key == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    if status_line[1] == b"1":
        keep_alive = b"close" not in tokens
    else:
        keep_alive = b"keep-alive" in tokens and b"close" not in tokens
    framing = _UNTIL_EOF
    if codings:
        framing = _CHUNKED if codings[-1] == b"chunked" else _UNTIL_EOF
    elif lengths:
        length = lengths.pop()
        if lengths or not (length.isdigit() and len(length) <= 18):
            lengths.add(length)
            raise ValueError(f"bad Content-Length {b', '.join(sorted(lengths))!r}")
        framing = int(length)
    headers = tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in fields)
    return int(status_line[2]), keep_alive, framing, headers


#: Heads up to this long are cached (256 of them): a few hundred KiB at most.
_CACHED_HEAD = 1024
_cached_facts = lru_cache(maxsize=256)(_facts)


def _fields(head: bytes, pos: int) -> list[tuple[bytes, bytes]]:
    """The ``name: value`` lines of ``head[pos:]``, each ending in CRLF; ValueError otherwise
    (obsolete line folding included)."""
    fields = []
    end = len(head)
    while pos < end:
        field = _FIELD.match(head, pos)
        if field is None:
            raise ValueError(f"malformed header line {_line_at(head, pos)!r}")
        fields.append((field[1], field[2]))
        pos = field.end()
    return fields


def _line_at(head: bytes, pos: int) -> bytes:
    """The line at ``pos`` (up to 80 bytes of it), to quote in an error."""
    return head[pos : head.find(b"\r\n", pos)][:80]

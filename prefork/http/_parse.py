"""Request checks h11 does not make (see reference/http-checklist.md, "Headline findings").

Pure: a check that fails raises ``Refused(status, reason)``, the answer to give before closing
the connection (h11's ``RemoteProtocolError(error_status_hint=...)``); the connection catches it
in one place. A second request parser (httptools) would raise the same.

- ``check_raw_head``: our own size limits on the raw bytes, whatever the client's write sizes
  (h11 only limits an *incomplete* head, so one large write got through).
- ``inspect_request``: version, request-target, CONNECT, CL+TE, duplicate CL, HTTP/1.0+TE,
  field count, and the facts the connection needs (body, keep-alive, expect, upgrade).
- ``ChunkScanner``: strict chunk-size lines of a chunked body (h11's accept bare CR, NUL and
  whitespace after the size) and the body size limit, checked on the raw bytes before h11.
"""

from __future__ import annotations

import re

import h11


class Refused(Exception):
    """A request we answer with ``status`` (``reason`` is the plain-text body) and close."""

    def __init__(self, status: int, reason: bytes) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


# h11 ends a head at "\n\r?\n" (bare LF lines are allowed by RFC 9112 section 2.2).
HEAD_END = re.compile(rb"\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*([^\r\n]*)")
_ABSOLUTE = re.compile(rb"(?i)https?://[^/?#\s]+([/?][^#\s]*)?")
# RFC 9112 section 7.1.1: chunk-size *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted ) ] )
# CRLF, without the BWS right after the size (h11 refuses that one too).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_EXT = rb"%s(?:[ \t]*=[ \t]*(?:%s|%s))?" % (_TOKEN, _TOKEN, _QUOTED)
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,20})(?:;[ \t]*%s(?:[ \t]*;[ \t]*%s)*)?\r\n" % (_EXT, _EXT)
)


def check_raw_head(
    buf: bytes, end: int, *, line_limit: int, field_limit: int, head_limit: int
) -> None:
    """Check a head's raw bytes. ``end`` is where the head ends in ``buf`` (-1: incomplete).

    Raises ``Refused``: 414 for a long request line, 431 for a long field line or a long head.
    """
    size = end if end != -1 else len(buf)
    if size > head_limit:
        raise Refused(431, b"Request header fields too large.\n")
    if end == -1:
        first = buf.find(b"\n")
        if first == -1:
            if len(buf) > line_limit + 1:
                raise Refused(414, b"Request line too long.\n")
        elif first > line_limit + 1:
            raise Refused(414, b"Request line too long.\n")
        elif len(buf) - buf.rfind(b"\n") - 1 > field_limit + 1:
            raise Refused(431, b"Request header field too large.\n")
        return
    if end <= min(line_limit, field_limit):
        return  # fast path: no line of a head this short can be over a limit
    lines = buf[:end].split(b"\n")
    if len(lines[0].rstrip(b"\r")) > line_limit:
        raise Refused(414, b"Request line too long.\n")
    for line in lines[1:]:
        if len(line.rstrip(b"\r")) > field_limit:
            raise Refused(431, b"Request header field too large.\n")


class RequestInfo:
    """A parsed request head that passed the checks, and what the connection needs to know.

    ``path`` is the target's path and query, for absolute-form as for origin-form; the head
    took ``buf[:head_end]`` of the bytes it was parsed from.
    """

    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "has_body",
        "head_end",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "websocket",
    )

    def __init__(
        self,
        method: bytes,
        path: bytes,
        http_version: bytes,
        headers: list[tuple[bytes, bytes]],
        head_end: int,
        has_body: bool,
        keep_alive: bool,
        expect_continue: bool,
        websocket: bool,
        chunked: bool,
        content_length: int,
    ) -> None:
        self.method = method
        self.path = path
        self.http_version = http_version
        self.headers = headers
        self.head_end = head_end
        self.has_body = has_body
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.websocket = websocket
        self.chunked = chunked
        self.content_length = content_length


def inspect_request(
    event: h11.Request, buf: bytes, end: int, *, field_count_limit: int
) -> RequestInfo:
    """Check what h11 lets through and gather the facts about a parsed request.

    Raises ``Refused`` (400, 431, 501, 505). ``buf[:end]`` is the head as received: h11
    merges repeated equal Content-Length values (``5`` twice, or ``5, 5``) into one, so
    duplicates are found there.
    """
    version = event.http_version
    if version != b"1.1" and version != b"1.0":
        raise Refused(505, b"HTTP version not supported.\n")
    method = event.method
    target = event.target
    first = target[:1]
    if first == b"/":
        path = target
    elif target == b"*":
        if method != b"OPTIONS":
            raise Refused(400, b"Invalid request target.\n")
        path = target
    elif method == b"CONNECT":
        raise Refused(501, b"CONNECT is not supported.\n")
    else:
        match = _ABSOLUTE.fullmatch(target)
        if match is None:
            raise Refused(400, b"Invalid request target.\n")
        path = match.group(1) or b"/"
        if path[:1] == b"?":
            path = b"/" + path
    if method == b"CONNECT":
        raise Refused(501, b"CONNECT is not supported.\n")

    # h11 keeps (raw name, lowercased name, value) triples; reading them directly saves a
    # Python-level __getitem__ per header (tests/unit/test_http_parse.py pins this).
    items = event.headers._full_items
    if len(items) > field_count_limit:
        raise Refused(431, b"Too many request header fields.\n")
    headers = [(name, value) for _, name, value in items]
    content_lengths = 0
    length = b"0"
    chunked = False
    connection: list[bytes] = []
    expect = False
    upgrade = b""
    for name, value in headers:
        if name == b"content-length":
            content_lengths += 1
            length = value
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"connection":
            connection.extend(t.strip() for t in value.lower().split(b","))
        elif name == b"expect":
            expect = value.lower() == b"100-continue"
        elif name == b"upgrade":
            upgrade = value.lower()
    if content_lengths and _duplicate_length(buf, end):
        raise Refused(400, b"Duplicate Content-Length.\n")
    if chunked:
        if content_lengths:
            raise Refused(400, b"Both Content-Length and Transfer-Encoding.\n")
        if version == b"1.0":
            raise Refused(400, b"Transfer-Encoding in an HTTP/1.0 request.\n")
    content_length = int(length) if length != b"0" else 0  # h11 checked it is digits
    keep_alive = b"close" not in connection if version == b"1.1" else False
    websocket = b"upgrade" in connection and b"websocket" in upgrade
    return RequestInfo(
        method,
        path,
        version,
        headers,
        end,
        chunked or content_length != 0,
        keep_alive,
        expect and version == b"1.1",
        websocket,
        chunked,
        content_length,
    )


def _duplicate_length(buf: bytes, end: int) -> bool:
    values = _CONTENT_LENGTH.findall(buf, 0, end)
    return len(values) != 1 or b"," in values[0]


class ChunkScanner:
    """Checks the framing lines of one chunked request body as its raw bytes arrive.

    h11 de-chunks the body; this runs in front of it (only for chunked bodies) and refuses
    what h11's chunk reader lets through: chunk extensions with bare CR, NUL or other control
    bytes, whitespace after the size (``0 \\r\\n``, ``1 ;x``), and chunk-size lines
    longer than ``line_limit``. It also adds up the chunk sizes against ``body_limit`` (0: no
    limit), so a body is refused as soon as a chunk header announces too much.

    It reads sizes exactly as h11 does and skips the chunk data plus its CRLF (h11 checks
    those two bytes), so the two stay in step; after the last chunk it stops (h11 checks
    the trailer fields).
    """

    __slots__ = ("_body_limit", "_done", "_line", "_line_limit", "_skip", "_total")

    def __init__(self, body_limit: int, line_limit: int) -> None:
        self._body_limit = body_limit
        self._line_limit = line_limit
        self._line = bytearray()  # the start of a chunk-size line cut by a read
        self._skip = 0  # bytes of chunk data and its CRLF still to pass
        self._total = 0
        self._done = False

    def feed(self, data: bytes, pos: int = 0) -> None:
        """Scan ``data[pos:]``. Raises ``Refused``: 400 for a bad chunk-size line, 413 once the
        chunk sizes add up to more than the body limit."""
        end = len(data)
        while pos < end and not self._done:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                continue
            newline = data.find(b"\n", pos)
            if newline == -1:
                self._line += data[pos:]
                if len(self._line) > self._line_limit:
                    raise Refused(400, b"Chunk header too long.\n")
                return
            line = data[pos : newline + 1]
            if self._line:
                line = bytes(self._line) + line
                self._line.clear()
            pos = newline + 1
            if len(line) > self._line_limit:
                raise Refused(400, b"Chunk header too long.\n")
            match = _CHUNK_LINE.fullmatch(line)
            if match is None:
                raise Refused(400, b"Invalid chunk header.\n")
            size = int(match.group(1), 16)
            if size == 0:
                self._done = True
            else:
                self._total += size
                if self._body_limit and self._total > self._body_limit:
                    raise Refused(413, b"Request body too large.\n")
                self._skip = size + 2

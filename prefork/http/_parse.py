"""Request heads: bytes -> ``RequestInfo``, with the checks h11 does not make (see
reference/http-checklist.md, "Headline findings").

Pure: a check that fails raises ``Refused(status, reason)``, the answer to give before closing
the connection (h11's ``RemoteProtocolError(error_status_hint=...)``); the connection catches it
in one place.

- ``RequestReader.parse``: ``fast_head`` reads the common heads whole (compiled patterns of
  clean lines, as h11 would read them: taking one is also checking its lines); any other head
  has its raw lines checked in ``_lines`` (size limits, strict syntax), then ``fast_head`` or
  h11 reads it;
- ``request_info``: version, request-target, CONNECT, CL+TE, duplicate CL, HTTP/1.0+TE, and
  the facts the connection needs (body, keep-alive, expect, upgrade), whichever parser read
  the head (``inspect_request`` for h11's).
"""

from __future__ import annotations

import re

import h11

from prefork.http._lines import FieldLines, Limits, Refused, quick_head_end

_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*([^\r\n]*)")
#: h11 refuses (400) a Content-Length of more digits than this, leading zeros counted
#: (``CONTENT_LENGTH_MAX_DIGITS`` in h11/_headers.py); ``fast_head`` leaves those heads to h11.
#: So ``request_info`` never converts a longer one (``int()`` raises past 4,300 digits).
CONTENT_LENGTH_DIGITS = 20
_ABSOLUTE = re.compile(rb"(?i)https?://[^/?#\s]+([/?][^#\s]*)?")


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


def inspect_request(event: h11.Request, buf: bytes | bytearray, end: int) -> RequestInfo:
    """Check what h11 lets through and gather the facts about a parsed request.

    Raises ``Refused`` (400, 501, 505). ``buf[:end]`` is the head as received: h11
    merges repeated equal Content-Length values (``5`` twice, or ``5, 5``) into one, so
    duplicates are found there.
    """
    # h11 keeps (raw name, lowercased name, value) triples; reading them directly saves a
    # Python-level __getitem__ per header (tests/unit/test_http_parse.py pins this).
    headers = [(name, value) for _, name, value in event.headers._full_items]
    return request_info(event.method, event.target, event.http_version, headers, buf, end)


def request_info(
    method: bytes,
    target: bytes,
    version: bytes,
    headers: list[tuple[bytes, bytes]],
    buf: bytes | bytearray,
    end: int,
    *,
    one_length: bool = False,
) -> RequestInfo:
    """The checks and facts of ``inspect_request``, of a head parsed by either parser.

    ``one_length``: the parser already saw at most one Content-Length, all digits (the fast
    path), so the head need not be searched for duplicates."""
    if version != b"1.1" and version != b"1.0":
        raise Refused(505, b"HTTP version not supported.\n")
    first = target[:1]
    if first == b"/":
        # A fragment is the client's own (RFC 9110 section 4.2.5): dropped, as llhttp does,
        # so it never reaches the app's path or query_string.
        path = target.partition(b"#")[0] if b"#" in target else target
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
            value = value.lower()
            if b"," in value:
                connection.extend(t.strip() for t in value.split(b","))
            else:
                connection.append(value)  # one token (both parsers trim a value's ends)
        elif name == b"expect":
            expect = value.lower() == b"100-continue"
        elif name == b"upgrade":
            upgrade = value.lower()
    if content_lengths and not one_length and _duplicate_length(buf, end):
        raise Refused(400, b"Duplicate Content-Length.\n")
    if chunked:
        if content_lengths:
            raise Refused(400, b"Both Content-Length and Transfer-Encoding.\n")
        if version == b"1.0":
            raise Refused(400, b"Transfer-Encoding in an HTTP/1.0 request.\n")
    # Digits, at most CONTENT_LENGTH_DIGITS of them: h11 checked, or fast_head did.
    content_length = int(length) if length != b"0" else 0
    # HTTP/1.0 closes unless the client asks for keep-alive (RFC 9112 section 9.3, and
    # appendix C.2.2: ab -k and old proxies send it); h11 would close, so it is decided here
    # for both parsers. Whether it holds depends on the response: ``build_head`` closes a
    # 1.0 response without a known length.
    if version == b"1.1":
        keep_alive = b"close" not in connection
    else:
        keep_alive = b"keep-alive" in connection and b"close" not in connection
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


def _duplicate_length(buf: bytes | bytearray, end: int) -> bool:
    values = _CONTENT_LENGTH.findall(buf, 0, end)
    return len(values) != 1 or b"," in values[0]


#: A worker remembers up to ``MEMO_HEADS`` of the request heads of at most ``MEMO_HEAD_BYTES``
#: it read last (``RequestReader``; emptied when full), with their ``RequestInfo``: a client
#: sending the same head again (a keep-alive client repeating a request, a health check, a
#: poller, a load generator) is not parsed again. ``request_info`` is pure, and a RequestInfo
#: is never changed (the scope gets a copy of its header list), so the same bytes can share
#: one. Bound: under 1 MiB per worker, heads and parsed fields (tests/unit/test_head_memo.py,
#: with the worst heads).
MEMO_HEADS = 64
MEMO_HEAD_BYTES = 1024


class RequestReader:
    """The bytes read from one connection and not parsed yet, and the head at their front.

    ``buf`` grows by ``append``, in place once it is a bytearray (linear, however small the
    client's writes); whoever takes bytes off its front assigns the rest.
    """

    __slots__ = ("_limits", "_lines", "_memo", "buf", "fast")

    def __init__(
        self, limits: Limits, fast: bool = True, memo: dict[bytes, RequestInfo] | None = None
    ) -> None:
        """``fast`` and ``memo`` may come by position: a class called with keywords packs them
        in a dict (once per connection)."""
        self._limits = limits
        self.fast = fast  # try ``fast_head`` before h11
        # The heads read last and their RequestInfo (``MEMO_HEADS``), shared by the readers of
        # one worker (one ``limits``): a head seen before is not parsed again.
        self._memo: dict[bytes, RequestInfo] = {} if memo is None else memo
        self.buf: bytes | bytearray = b""
        self._lines: FieldLines | None = None  # the checks of an incomplete head in ``buf``

    def _whole_head(self, buf: bytes | bytearray) -> RequestInfo | None:
        """The head at the front of ``buf`` when it is whole and the fast path takes it, as
        nearly every client sends it: from the memo, or read by ``fast_head``, which checks
        its lines itself (no ``quick_head_end`` scan first). None: ``parse`` goes on."""
        limits = self._limits
        end = buf.find(b"\r\n\r\n") + 4
        if not 3 < end <= limits.fast:
            return None
        memo = self._memo
        key = None
        if end <= MEMO_HEAD_BYTES and type(buf) is bytes:
            key = buf if end == len(buf) else buf[:end]
            info = memo.get(key)
            if info is not None:
                return info
        head = fast_head(buf, end, limits.fields)
        if head is None:
            return None
        info = request_info(*head, buf, end, one_length=True)
        if key is not None:
            if len(memo) >= MEMO_HEADS:
                memo.clear()  # a new set of clients: start again
            memo[key] = info
        return info

    def append(self, data: bytes) -> None:
        buf = self.buf
        if type(buf) is bytearray:
            buf += data
        elif buf:
            self.buf = bytearray(buf) + data
        else:
            self.buf = data

    def nothing_follows(self) -> bool:
        """Whether no complete request head waits in ``buf``."""
        return b"\r\n\r\n" not in self.buf

    def parse(self) -> tuple[RequestInfo, h11.Connection | None] | None:
        """The head at the front of ``buf``, checked, and for a chunked request the h11
        connection that parsed it (it de-chunks the body); None while it is incomplete.

        A whole head that ``fast_head`` takes needs nothing more. Any other head's raw lines
        are checked first (``_lines``: a whole short clean head at once, any other line by
        line as it arrives, never twice), then read by ``fast_head`` or h11. Raises
        ``Refused``.
        """
        buf = self.buf
        limits = self._limits
        lines = self._lines
        if lines is None:
            if buf[0] in b"\r\n":  # RFC 9112 section 2.2: ignore empty lines before a request
                buf = self.buf = buf.lstrip(b"\r\n")
                if not buf:
                    return None
            if self.fast:
                info = self._whole_head(buf)
                if info is not None:
                    return info, None
            end = quick_head_end(buf, limits)
            if end == -1:
                lines = self._lines = FieldLines(limits, request_line=True)
        if lines is not None:
            end = lines.feed(buf)
            if end == -1:
                if type(buf) is not bytearray:
                    self.buf = bytearray(buf)  # to be appended to in place
                return None
            self._lines = None
        if self.fast and lines is not None:  # a head from several reads, checked by now
            head = fast_head(buf, end, limits.fields)
            if head is not None:
                return request_info(*head, buf, end, one_length=True), None
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.head)
        parser.receive_data(buf)  # type: ignore[arg-type]  # h11 copies any bytes-like
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError as exc:
            raise Refused(exc.error_status_hint, b"Invalid HTTP request.\n") from None
        assert isinstance(event, h11.Request)  # a whole head is in the buffer
        info = inspect_request(event, buf, end)
        return info, parser if info.chunked else None


# RFC 9112's request head, for the heads nearly every client sends: a token method, a target
# of visible characters, HTTP/1.0 or 1.1, and header fields as h11 reads them (token name,
# value trimmed of spaces and tabs). No pattern takes a control byte but HTAB, nor CR or LF
# but a line's final CRLF. The grammar leaves one way to match a line, so the quantifiers are
# possessive (``++``: no backtracking to try; ~20% less time in ``findall``).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]++"
_VISIBLE = rb"[\x21-\x7e\x80-\xff]++"
_VALUE = rb"(?:%s(?:[ \t]++%s)*+)?" % (_VISIBLE, _VISIBLE)
_REQUEST_LINE = re.compile(rb"(%s) ([\x21-\x7e]++) HTTP/1\.([01])\r\n" % _TOKEN)
# A field line from the start of a line (MULTILINE: after an LF) to its CRLF. A match holds
# one LF, its last byte, so a head with as many matches as LFs (the blank line's aside) is
# made of whole field lines: one pass checks the lines (no bare CR or LF, no other control
# byte, no obs-fold) and reads the fields.
_FIELDS = re.compile(rb"^(%s):[ \t]*+(%s)[ \t]*\r\n" % (_TOKEN, _VALUE), re.MULTILINE)


def fast_head(
    buf: bytes | bytearray, end: int, max_fields: int
) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]] | None:
    """``(method, target, version, headers)`` of the head ``buf[:end]`` (it ends in CRLF
    CRLF), as h11 would parse it; None for any head this does not read exactly as h11 does
    (a Transfer-Encoding, which h11 normalises; Content-Length other than once and in at most
    20 digits; Host other than once; more than ``max_fields`` fields; anything the patterns
    do not take, such as any line ``_lines`` refuses). The caller checks the head's length
    (``Limits.fast``); the rest, h11 parses after ``_lines`` checked it.

    tests/unit/test_http_fast_head.py checks both paths agree on generated heads.
    """
    if type(buf) is not bytes:
        buf = bytes(buf[:end])  # what the app sees is bytes
    line = _REQUEST_LINE.match(buf, 0, end)
    if line is None or buf[end - 4 : end] != b"\r\n\r\n":
        return None
    method, target, minor = line.groups()
    start = line.end()
    fields = _FIELDS.findall(buf, start, end - 2)  # the head's blank line left out
    if len(fields) != buf.count(b"\n", start, end) - 1 or len(fields) > max_fields:
        return None  # a line that is not a field, or too many
    headers = [(name.lower(), value) for name, value in fields]
    hosts = lengths = 0
    for name, value in headers:
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            lengths += 1
            if not value.isdigit() or len(value) > CONTENT_LENGTH_DIGITS:
                return None
        elif name == b"transfer-encoding":
            return None
    if hosts != 1 or lengths > 1:
        return None
    return method, target, b"1." + minor, headers

"""Field lines as they arrive: a request head (request line and header fields) or the trailer
section of a chunked body, checked line by line whatever the client's write sizes.

Pure, like ``_parse``: a check that fails raises ``Refused(status, reason)``, the answer to
give before closing the connection (h11's ``RemoteProtocolError(error_status_hint=...)``),
caught by the connection in one place.

Each complete line is checked once, in order, when its LF arrives; the line still incomplete
is only measured, against size limits it can only grow past. So the verdict is the same
however the bytes are split, and the work is linear in the bytes received: nothing already
checked is searched again. In the order they are checked, a line is refused with:

- 414 (the request line) or 431 (a field line) when longer than its limit, and 431 when the
  section grows past ``head`` bytes. A line past both limits answers for the one it crossed
  first, as it would have byte by byte. The limits count as gunicorn's flags of the same
  names do (gunicorn/http/message.py): the request line without its CRLF, a field line with
  it (a 97-byte field line is 99 bytes, over a limit of 98);
- 400 when it ends in a bare LF, holds a control byte other than HTAB (NUL, DEL, a bare CR...)
  or starts with whitespace (obs-fold). RFC 9112 lets a server unfold or accept these; a proxy
  in front that reads them differently is how requests are smuggled, so we refuse them
  (h11 would unfold, and accept the rest);
- 431 when the section ends with more than ``fields`` field lines. They are counted as they
  come, but the verdict waits for the blank line (the size limits bound how long): a client
  still sending its head would otherwise meet our close as a reset, not read the answer.

``quick_head_end`` is the quick check of a whole, short, clean head in one buffer (for the
heads ``_parse.fast_head``, which checks its own, did not take): a few C-level scans instead
of a Python loop per line. It only ever says "fine": when anything is off, the caller runs
``FieldLines`` over the same bytes, which decides.
"""

from __future__ import annotations

import re


class Refused(Exception):
    """A request we answer with ``status`` (``reason`` is the plain-text body, ``headers``
    more header lines) and close."""

    def __init__(self, status: int, reason: bytes, headers: bytes = b"") -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = headers


_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # every control byte but HTAB
_NOT_CONTROL = bytes(b for b in range(256) if _CONTROL.match(bytes([b])) is None)

_LINE_TOO_LONG = (414, b"Request line too long.\n")
_FIELD_TOO_LONG = (431, b"Request header field too large.\n")
_TOO_BIG = (431, b"Request header fields too large.\n")
_TOO_MANY = (431, b"Too many request header fields.\n")


class Limits:
    """The size limits of a head (and of a trailer section: ``line`` does not apply there)."""

    __slots__ = ("fast", "field", "fields", "head", "line")

    def __init__(self, *, line: int, field: int, head: int, fields: int) -> None:
        self.line = line
        self.field = field
        self.head = head
        self.fields = fields
        #: A head no longer than this has no line over a limit (a field line's CRLF is in the
        #: head too), and is not over ``head``.
        self.fast = min(line, field, head)


def quick_head_end(buf: bytes | bytearray, limits: Limits) -> int:
    """Where the head at the start of ``buf`` ends (past its CRLF CRLF) when it is whole,
    within ``limits.fast`` bytes, and every line is clean; else -1 (the caller then asks
    ``FieldLines``, which finds the same end or refuses)."""
    end = buf.find(b"\r\n\r\n") + 4
    if end == 3 or end > limits.fast:
        return -1
    head = buf if end == len(buf) else buf[:end]
    lines = head.count(b"\r\n")
    # Every control byte but HTAB must be the CR or LF of a CRLF: none alone, none other.
    if len(head.translate(None, _NOT_CONTROL)) != 2 * lines or lines - 2 > limits.fields:
        return -1
    if b"\n " in head or b"\n\t" in head:
        return -1
    return end


class FieldLines:
    """Checks the lines of one section as the buffer holding it grows.

    ``feed(buf)`` is given the same buffer each time, longer (the section starts at
    ``start``); it returns where the section ends, past its blank line, once that came.
    """

    __slots__ = ("_fields", "_first", "_limits", "_line", "_scan", "_start")

    def __init__(self, limits: Limits, *, start: int = 0, request_line: bool) -> None:
        self._limits = limits
        self._start = start
        self._line = start  # where the line being received starts
        self._scan = start  # where the search for its LF goes on
        self._first = request_line  # the line being received is a request line
        self._fields = 0

    def feed(self, buf: bytes | bytearray) -> int:
        """Check the lines of ``buf`` that became complete. Returns the offset just past the
        blank line ending the section, or -1 while it has not come. Raises ``Refused``."""
        limits = self._limits
        while True:
            newline = buf.find(b"\n", self._scan)
            line = self._line
            if newline == -1:
                self._scan = len(buf)
                self._measure(len(buf) - line)
                return -1
            self._measure(newline - line)  # as if the LF had not come yet
            end = newline
            crlf = end > line and buf[end - 1] == 13
            if crlf:
                end -= 1
            # A field line's size, with its LF, was measured just above.
            if self._first and end - line > limits.line:
                raise Refused(*_LINE_TOO_LONG)
            if newline + 1 - self._start > limits.head:
                raise Refused(*_TOO_BIG)
            if not crlf:
                raise Refused(400, b"Bare LF in the request head.\n")
            if _CONTROL.search(buf, line, end) is not None:
                raise Refused(400, b"Invalid character in the request head.\n")
            self._line = self._scan = newline + 1
            if end == line:
                if self._fields > limits.fields:
                    raise Refused(*_TOO_MANY)
                return newline + 1
            if self._first:
                self._first = False
                continue
            if buf[line] in b" \t":
                raise Refused(400, b"Obsolete line folding in the request head.\n")
            self._fields += 1

    def _measure(self, size: int) -> None:
        """Refuse a line that has ``size`` bytes before its LF if it is too long already
        or takes the section past ``head``: whichever of the two it crossed first.

        The request line's limit leaves out its CRLF: its CR may be among the ``size``
        bytes. A field line's counts the CRLF: its LF is still to come. The blank line
        ending the section is no field line: its CR fits even under a limit of 1 or 2 (a
        line of 1 byte and an LF is that blank line, or a bare LF: refused either way).
        """
        limits = self._limits
        longest = limits.line + 1 if self._first else max(limits.field - 1, 1)
        room = limits.head - (self._line - self._start)
        if size > longest or size > room:
            if longest > room:
                raise Refused(*_TOO_BIG)
            raise Refused(*(_LINE_TOO_LONG if self._first else _FIELD_TOO_LONG))


# RFC 9112 section 7.1.1: chunk-size *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted ) ] )
# CRLF, without the BWS right after the size (h11 refuses that one too).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_EXT = rb"%s(?:[ \t]*=[ \t]*(?:%s|%s))?" % (_TOKEN, _TOKEN, _QUOTED)
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,20})(?:;[ \t]*%s(?:[ \t]*;[ \t]*%s)*)?\r\n" % (_EXT, _EXT)
)


class ChunkScanner:
    """Checks the framing lines of one chunked request body as its raw bytes arrive.

    h11 de-chunks the body; this runs in front of it (only for chunked bodies) and refuses
    what h11's chunk reader lets through: chunk extensions with bare CR, NUL or other control
    bytes, whitespace after the size (``0 \\r\\n``, ``1 ;x``), chunk-size lines longer than
    ``limits.field`` with their CRLF (as a field line counts), and trailer sections that a
    head would not pass (``FieldLines``: the same size, count and syntax limits). It also
    adds up the chunk sizes against ``body_limit`` (0: no limit), so a body is refused as
    soon as a chunk header announces too much.

    It reads sizes exactly as h11 does and skips the chunk data, so the two stay in step; after
    the trailer section it stops. It checks everything h11 checks in the framing, the CRLF
    after each chunk's data too, and sees each byte first: however the body is split, the
    refusal is ours, for the first bad byte.
    """

    __slots__ = (
        "_body_limit",
        "_crlf",
        "_done",
        "_limits",
        "_line",
        "_skip",
        "_total",
        "_trailer",
    )

    def __init__(self, body_limit: int, limits: Limits) -> None:
        self._body_limit = body_limit
        self._limits = limits
        self._line = bytearray()  # the start of a chunk-size line cut by a read
        self._skip = 0  # bytes of chunk data still to pass
        self._crlf = b""  # what is still due of the CRLF after a chunk's data
        self._total = 0
        self._trailer: tuple[bytearray, FieldLines] | None = None  # after the last chunk
        self._done = False

    def feed(self, data: bytes | bytearray, pos: int = 0) -> None:
        """Scan ``data[pos:]``. Raises ``Refused``: 400 for a bad chunk-size line, 413 once the
        chunk sizes add up to more than the body limit, 400 or 431 for the trailer section."""
        end = len(data)
        line_limit = self._limits.field
        while pos < end and not self._done:
            if self._trailer is not None:
                section, fields = self._trailer
                section += data[pos:]
                self._done = fields.feed(section) != -1
                return
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                continue
            if self._crlf:
                if data[pos] != self._crlf[0]:
                    raise Refused(400, b"Chunk data not followed by CRLF.\n")
                self._crlf = self._crlf[1:]
                pos += 1
                continue
            newline = data.find(b"\n", pos)
            if newline == -1:
                self._line += data[pos:]
                if len(self._line) > line_limit:
                    raise Refused(400, b"Chunk header too long.\n")
                return
            line = data[pos : newline + 1]
            if self._line:
                line = bytes(self._line) + line
                self._line.clear()
            pos = newline + 1
            if len(line) > line_limit:
                raise Refused(400, b"Chunk header too long.\n")
            match = _CHUNK_LINE.fullmatch(line)
            if match is None:
                raise Refused(400, b"Invalid chunk header.\n")
            size = int(match.group(1), 16)  # of 1 to 20 hex digits, as h11 reads them
            if size == 0:
                self._trailer = (bytearray(), FieldLines(self._limits, request_line=False))
            else:
                self._total += size
                if self._body_limit and self._total > self._body_limit:
                    raise Refused(413, b"Request body too large.\n")
                self._skip = size
                self._crlf = b"\r\n"

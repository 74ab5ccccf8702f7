"""Response framing, done by us rather than by h11 (it doubles throughput): status lines,
header validation, Date caching, and the Content-Length / chunked / close-delimited decision.

Pure: bytes in, bytes out. The rules (RFC 9112 section 6):
- 1xx, 204 and 304 responses, and responses to HEAD, carry no body bytes (and no
  ``Transfer-Encoding``: the app's is always dropped; its Content-Length is kept on HEAD and
  304, where it describes the body a GET would get, and dropped on 204);
- with a Content-Length the body is exactly that long;
- without one, HTTP/1.1 responses are chunked; HTTP/1.0 ones end when the connection closes.

An HTTP/1.0 connection is kept alive only when the client asked (``Connection: keep-alive``)
and the response's length is known; it then says ``connection: keep-alive``, as nginx does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

# Framing modes of a response body.
LENGTH = 0  # Content-Length given: pass bytes through, count them
CHUNKED = 1  # Transfer-Encoding: chunked, added by us
UNTIL_CLOSE = 2  # HTTP/1.0 client, no length: the close ends the body
NO_BODY = 3  # HEAD, 1xx, 204, 304: drop body bytes

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """Return ``HTTP/1.1 <status> <reason>\\r\\n`` (cached)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        _STATUS_LINES[status] = line
    return line


_date_second = 0
_date_header = b""


def date_header() -> bytes:
    """Return ``date: <IMF-fixdate>\\r\\n``, formatted at most once a second."""
    global _date_second, _date_header
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_header = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date_header


class ResponseHead:
    """What ``http.response.start`` decided, and the encoded head to write."""

    __slots__ = ("close", "content_length", "head", "mode")

    def __init__(self, head: bytes, mode: int, content_length: int, close: bool) -> None:
        self.head = head
        self.mode = mode
        self.content_length = content_length
        self.close = close


def _as_bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    raise TypeError(f"response header {what} must be bytes, got {type(value).__name__}")


def checked_header(name: object, value: object) -> tuple[bytes, bytes]:
    """An app's header as (lowercased name, value) bytes; ``TypeError``/``ValueError`` if it
    is not a valid field (a newline in a value would let the app split the response)."""
    name = _as_bytes(name, "name").lower()
    value = _as_bytes(value, "value")
    if _TOKEN.fullmatch(name) is None:
        raise ValueError(f"invalid response header name {name!r}")
    if _BAD_VALUE.search(value) is not None:
        raise ValueError(f"invalid response header value {value!r} for {name.decode()}")
    return name, value


def header_line(name: object, value: object) -> bytes:
    """``name: value\r\n`` for an app's header, checked (``checked_header``)."""
    return b"%s: %s\r\n" % checked_header(name, value)


class HeadDefaults:
    """What every response of a worker carries unless the app sent it: ``date`` and
    ``server`` headers (each may be turned off), and the operator's extra headers (encoded
    ``name: value\r\n`` lines, always added)."""

    __slots__ = ("date", "extra", "server")

    def __init__(self, *, date: bool = True, server: bool = True, extra: bytes = b"") -> None:
        self.date = date
        self.server = server
        self.extra = extra


DEFAULTS = HeadDefaults()

# What one app header means to ``build_head``: its kind, its encoded line, and for a
# Content-Length its number. Apps send the same few headers on every response, so each pair
# is checked and encoded once (the cache stops growing at ``_MAX_FIELD_LINES`` pairs).
_PLAIN, _LENGTH, _SKIP, _CLOSE, _DATE, _SERVER = range(6)
_KINDS = {b"transfer-encoding": _SKIP, b"date": _DATE, b"server": _SERVER}
FieldLine = tuple[int, bytes, int]
_FIELD_LINES: dict[Any, FieldLine] = {}
_FIELD_LINES_AS_GIVEN: dict[Any, FieldLine] = {}  # the same, names in the app's case
_MAX_FIELD_LINES = 1024


def _field_line(
    raw_name: object, raw_value: object, as_given: bool, cache: dict[Any, FieldLine]
) -> FieldLine:
    name, value = checked_header(raw_name, raw_value)
    # ``as_given`` (WSGI): the name goes out as the app gave it, "Content-Type" as under
    # gunicorn; ASGI names go out lowercased (as uvicorn's httptools writes them).
    given = _as_bytes(raw_name, "name") if as_given else name
    number = -1
    if name == b"content-length":
        if not value.isdigit():
            raise ValueError(f"invalid content-length response header {value!r}")
        kind, number = _LENGTH, int(value)
    elif name == b"connection":
        close = b"close" in [t.strip() for t in value.lower().split(b",")]
        kind = _CLOSE if close else _SKIP
    else:
        kind = _KINDS.get(name, _PLAIN)
    entry = (kind, b"%s: %s\r\n" % (given, value), number)
    if len(cache) < _MAX_FIELD_LINES:
        cache[raw_name, raw_value] = entry  # valid, so bytes or str: hashable
    return entry


def build_head(
    status: int,
    headers: Iterable[tuple[bytes, bytes]] | Iterable[list[bytes]],
    *,
    http_11: bool,
    head_request: bool,
    keep_alive: bool,
    defaults: HeadDefaults = DEFAULTS,
    body_length: int | None,
    reason: bytes | None = None,
    names_as_given: bool = False,
) -> ResponseHead:
    """Validate the app's status and headers and frame the response head.

    ``body_length`` is the whole body's length when the app gave it at once (start then one
    final body), else None (streaming). ``keep_alive`` False adds ``connection: close``.
    ``reason``: the status line's reason phrase as the app gave it (WSGI's status string,
    checked by the caller), else the standard one. ``names_as_given``: header names keep the
    app's case (WSGI), else go out lowercased.
    Raises ``TypeError``/``ValueError`` for a bad status or header (the app's error).
    """
    if type(status) is not int or not 100 <= status <= 599:
        raise ValueError(f"response status must be an int in 100..599, got {status!r}")
    if 100 <= status < 200:
        raise ValueError("http.response.start cannot carry a 1xx status")
    parts = [status_line(status) if reason is None else b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    content_length = -1
    saw_date = saw_server = False
    close = not keep_alive
    cache = _FIELD_LINES_AS_GIVEN if names_as_given else _FIELD_LINES
    for raw_name, raw_value in headers:
        try:
            kind, line, number = cache[raw_name, raw_value]
        except (KeyError, TypeError):  # not seen yet; TypeError: unhashable, so invalid
            kind, line, number = _field_line(raw_name, raw_value, names_as_given, cache)
        if kind == _PLAIN:
            parts.append(line)
        elif kind == _LENGTH:
            if content_length != -1:
                raise ValueError("two content-length response headers")
            if status == 204:
                continue  # RFC 9110 section 8.6: a 204 MUST NOT send Content-Length
            content_length = number
            parts.append(line)
        elif kind == _CLOSE:
            close = True  # the app's connection header is re-added below when we close
        elif kind == _DATE:
            saw_date = True
            parts.append(line)
        elif kind == _SERVER:
            saw_server = True
            parts.append(line)
        # _SKIP: transfer-encoding is ours to decide, connection without close ours to drop
    if not saw_date and defaults.date:
        parts.append(date_header())
    if defaults.server and not saw_server:
        parts.append(b"server: prefork\r\n")
    if defaults.extra:
        parts.append(defaults.extra)

    if status in (204, 304) or head_request:
        mode = NO_BODY
        if head_request and content_length == -1 and status not in (204, 304):
            if body_length is not None:
                parts.append(b"content-length: %d\r\n" % body_length)
            elif http_11:
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                close = True
    elif content_length != -1:
        mode = LENGTH
    elif body_length is not None:
        mode = LENGTH
        content_length = body_length
        parts.append(b"content-length: %d\r\n" % body_length)
    elif http_11:
        mode = CHUNKED
        parts.append(b"transfer-encoding: chunked\r\n")
    else:
        mode = UNTIL_CLOSE
        close = True
    if close:
        parts.append(b"connection: close\r\n")
    elif not http_11:  # an HTTP/1.0 client that asked for keep-alive is told it holds
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return ResponseHead(b"".join(parts), mode, content_length, close)


#: The heads built in the current second, by what each was built from (``framed_head``).
_HEADS: dict[tuple[Any, ...], ResponseHead] = {}
_heads_second = 0
#: The most heads kept: an app whose bodies vary in length makes a new head for each length.
MAX_HEADS = 256


def framed_head(
    status: int,
    headers: Iterable[tuple[bytes, bytes]] | Iterable[list[bytes]],
    http_11: bool,
    head_request: bool,
    keep_alive: bool,
    defaults: HeadDefaults,
    body_length: int | None,
    reason: bytes | None,
) -> ResponseHead:
    """``build_head`` (names as given when there is a ``reason``: WSGI), remembered for the
    rest of the second (the date line changes with it).

    An app sends the same status and headers on most responses, and building a head took
    about a tenth of a keep-alive request's CPU; looking it up takes a third of building it.
    Headers that cannot be a key (lists, bytearrays) are built each time, as is a status that
    is not an int (``200.0`` equals ``200`` as a key, and is refused by ``build_head``).
    """
    global _heads_second
    fields: tuple[Any, ...] = tuple(headers)  # any iterable, read once
    key = (status, fields, http_11, head_request, keep_alive, defaults, body_length, reason)
    now = int(time.time())
    if now != _heads_second or len(_HEADS) >= MAX_HEADS:
        _heads_second = now
        _HEADS.clear()
    keep = type(status) is int
    if keep:
        try:
            head = _HEADS.get(key)
        except TypeError:  # an unhashable header
            keep = False
        else:
            if head is not None:
                return head
    head = build_head(
        status,
        fields,
        http_11=http_11,
        head_request=head_request,
        keep_alive=keep_alive,
        defaults=defaults,
        body_length=body_length,
        reason=reason,
        names_as_given=reason is not None,
    )
    if keep:
        _HEADS[key] = head
    return head


def chunk(data: bytes) -> bytes:
    """Encode one chunk (never the last one: empty data gives b"")."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def simple_response(
    status: int, body: bytes, *, head_request: bool = False, extra: bytes = b""
) -> bytes:
    """A complete plain-text response of our own (errors, refusals), closing the connection.

    To a HEAD request, the same head without the body. ``extra``: more header lines.
    """
    return b"".join(
        (
            status_line(status),
            extra,
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            date_header(),
            b"server: prefork\r\n",
            b"connection: close\r\n\r\n",
            b"" if head_request else body,
        )
    )

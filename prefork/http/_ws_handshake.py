"""The WebSocket opening handshake (RFC 6455 section 4.2) and per-message deflate (RFC 7692).

Pure: a request head that passed the HTTP checks -> the client's ``Offer`` (or ``Refused``)
and the ``websocket`` scope, and the app's ``websocket.accept`` -> the bytes of the 101
answer; an app's denial response is framed by a ``Cycle`` (``denial_cycle``). wsproto frames
the messages once the handshake is done; the handshake is ours, so the upgrade request goes
through the same strict parser, limits and refusals as every other request.

``BoundedDeflate`` is wsproto's per-message deflate with one change: it never inflates more
than a message may hold. wsproto inflates whatever a frame carries, and deflate packs about
1000:1, so a 64 KiB read could otherwise become 64 MiB of memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable
from typing import Any

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from prefork.http._asgi import Cycle
from prefork.http._flow import FlowControl
from prefork.http._framing import HeadDefaults, date_header, header_line
from prefork.http._lines import Refused
from prefork.http._parse import RequestInfo
from prefork.http._stats import Stats

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: How much a frame's payload is inflated by at a time (``BoundedDeflate._inflate``).
INFLATE_STEP = 1 << 20
_VERSION_HEADER = b"sec-websocket-version: 13\r\n"


class Offer:
    """What a valid upgrade request asks for: its key, subprotocols and extension offers."""

    __slots__ = ("extensions", "key", "subprotocols")

    def __init__(self, key: bytes, subprotocols: list[str], extensions: list[str]) -> None:
        self.key = key
        self.subprotocols = subprotocols
        self.extensions = extensions


def _tokens(value: bytes) -> list[str]:
    return [t.strip() for t in value.decode("latin-1").split(",") if t.strip()]


def read_offer(info: RequestInfo) -> Offer:
    """Check an upgrade request against RFC 6455 section 4.2.1. Raises ``Refused``: 400 for a
    malformed handshake, 426 (naming the version we speak) for another protocol version."""
    if info.method != b"GET" or info.http_version != b"1.1" or info.has_body:
        raise Refused(400, b"A WebSocket handshake is a GET over HTTP/1.1 with no body.\n")
    key = b""
    version = b""
    subprotocols: list[str] = []
    extensions: list[str] = []
    for name, value in info.headers:
        if name == b"sec-websocket-key":
            if key:
                raise Refused(400, b"More than one Sec-WebSocket-Key.\n")
            key = value.strip()
        elif name == b"sec-websocket-version":
            version = value.strip()
        elif name == b"sec-websocket-protocol":
            subprotocols += _tokens(value)
        elif name == b"sec-websocket-extensions":
            extensions += _tokens(value)
    if not version:
        raise Refused(400, b"A WebSocket handshake needs Sec-WebSocket-Version: 13.\n")
    if version != b"13":
        raise Refused(426, b"Only WebSocket version 13 is supported.\n", _VERSION_HEADER)
    try:
        nonce = base64.b64decode(key, validate=True)
    except binascii.Error:
        nonce = b""
    if len(nonce) != 16:
        raise Refused(400, b"Invalid Sec-WebSocket-Key.\n")
    return Offer(key, subprotocols, extensions)


def accept_token(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value for a client's key."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def negotiate_deflate(offers: list[str], max_size: int) -> tuple[BoundedDeflate, str] | None:
    """The first per-message deflate offer we can accept, and the parameters to answer with."""
    for offer in offers:
        if offer.split(";", 1)[0].strip() != PerMessageDeflate.name:
            continue
        extension = BoundedDeflate(max_size)
        try:
            params = extension.accept(offer)
        except ValueError:  # a window-bits parameter that is not a number
            continue
        if isinstance(params, str):
            answer = PerMessageDeflate.name + ("; " + params if params else "")
            return extension, answer
    return None


def accept_response(
    offer: Offer,
    *,
    subprotocol: object,
    headers: object,
    extension: str | None,
    defaults: HeadDefaults,
) -> bytes:
    """The 101 answer to ``offer`` for the app's ``websocket.accept``.

    Raises ``TypeError``/``ValueError`` for a bad subprotocol or header (the app's error).
    """
    parts = [
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
        b"sec-websocket-accept: " + accept_token(offer.key) + b"\r\n",
    ]
    if subprotocol is not None:
        if not isinstance(subprotocol, str):
            raise TypeError(f"websocket.accept 'subprotocol' must be a str, not {subprotocol!r}")
        parts.append(header_line(b"sec-websocket-protocol", subprotocol))
    if extension is not None:
        parts.append(b"sec-websocket-extensions: " + extension.encode("latin-1") + b"\r\n")
    saw_date = saw_server = False
    for name, value in headers or ():  # type: ignore[attr-defined]
        line = header_line(name, value)
        saw_date = saw_date or line.startswith(b"date:")
        saw_server = saw_server or line.startswith(b"server:")
        parts.append(line)
    if defaults.date and not saw_date:
        parts.append(date_header())
    if defaults.server and not saw_server:
        parts.append(b"server: prefork\r\n")
    parts.append(defaults.extra)
    parts.append(b"\r\n")
    return b"".join(parts)


def websocket_scope(http_scope: dict[str, Any], offer: Offer) -> dict[str, Any]:
    """The ASGI ``websocket`` scope, from the ``http`` one the same request would have."""
    scope = dict(http_scope)
    del scope["method"]
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if http_scope["scheme"] == "https" else "ws"
    scope["subprotocols"] = offer.subprotocols
    scope["extensions"] = {"websocket.http.response": {}}
    return scope


def denial_cycle(
    scope: dict[str, Any],
    transport: asyncio.Transport,
    flow: FlowControl,
    defaults: HeadDefaults,
    stats: Stats,
    done: Callable[[], None],
) -> Cycle:
    """The ``Cycle`` that frames an app's denial response (``websocket.http.response.*``
    messages, renamed ``http.response.*``) like any response; ``done`` when it is complete."""
    return Cycle(
        scope,
        transport,
        flow,
        asyncio.get_running_loop(),
        has_body=False,
        keep_alive=False,
        expect_continue=False,
        http_11=True,
        head_request=False,
        head_defaults=defaults,
        stats=stats,
        on_response_complete=lambda cycle: done(),
        on_body_consumed=lambda: None,
        on_abort=lambda cycle, status=500: None,
    )


class BoundedDeflate(PerMessageDeflate):
    """Per-message deflate that inflates at most ``max_size`` bytes of one message: past that,
    the connection is closed with 1009 (message too big) before the bytes exist.

    It overrides the inbound steps of wsproto's ``PerMessageDeflate`` (wsproto 1.x keeps its
    state in the attributes used here; tests/unit/test_ws_handshake.py pins them), and keeps
    a ping between two fragments of a compressed message from resetting the message's state.
    """

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self.max_size = max_size
        self.inflated = 0  # of the message in progress

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        """Inflate ``data`` in ``INFLATE_STEP`` pieces: zlib's one call would hold its output
        twice (its blocks, then the bytes joined from them), so a bomb refused at the
        default 16 MiB would cost 32 MiB rather than 17."""
        decompressor = self._decompressor
        assert decompressor is not None
        room = self.max_size - self.inflated
        pieces = []
        size = 0
        try:
            while True:
                step = min(room + 1 - size, INFLATE_STEP)  # never 0: zlib's "no limit"
                piece = decompressor.decompress(data, step)
                pieces.append(piece)
                size += len(piece)
                if size > room:
                    return CloseReason.MESSAGE_TOO_BIG
                if len(piece) < step:  # the input is used up and its output all out
                    break
                data = decompressor.unconsumed_tail
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self.inflated += size
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, length: int
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol():  # a ping between two fragments leaves the message's state be
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            self._inbound_is_compressible = False
            return RsvBits(True, False, False)
        return super().frame_inbound_header(proto, opcode, rsv, length)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin or not self._inbound_is_compressible:
            return None  # a fragment, or a control frame
        compressed = self._inbound_compressed
        self._inbound_compressed = None
        if not compressed:
            return None
        out = self._inflate(b"\x00\x00\xff\xff")  # RFC 7692 section 7.2.2: the removed tail
        self.inflated = 0
        if self.client_no_context_takeover:
            self._decompressor = None
        return out

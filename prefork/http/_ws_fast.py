"""A fast path for the WebSocket frames nearly every client sends, beside wsproto (as
``_parse.fast_head`` is beside h11): a whole, unfragmented, masked text or binary frame of at
most 65,535 bytes, without extensions, read while wsproto holds nothing (no partial frame, no
fragmented message). Anything else (a control frame, a fragment, a reserved bit, a longer
frame, a bad UTF-8 text, a frame not whole yet) goes to wsproto, from that frame on, and
wsproto decides as it always did. Our messages out are framed the same way wsproto frames
them, without its per-frame objects.

Pure: bytes in, messages or bytes out. tests/unit/test_ws_fast.py checks, on random frames
split across reads every way, that the app gets the same messages and the client the same
bytes with the fast path as with wsproto alone.
"""

from __future__ import annotations

import struct
from typing import Protocol

from wsproto.connection import Connection

_TEXT, _BINARY = 0x81, 0x82  # FIN, no reserved bit, opcode 1 or 2
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")


def wsproto_idle(conn: Connection) -> bool:
    """Whether wsproto holds no byte of a frame and no part of a message, so that the next
    frame may be read here. (Its parser's state, read directly: wsproto has no public way to
    ask; the differential test fails if a new version moves it.)"""
    proto = conn._proto
    decoder = proto._frame_decoder
    return (
        decoder.header is None
        and not decoder.buffer.buffer
        and proto._message_decoder.opcode is None
    )


class Receiver(Protocol):
    """Where the messages read go (a ``WebSocketSession``)."""

    def queue_full(self) -> bool: ...
    def message_received(self, data: str | bytes, size: int) -> None: ...


def take_frames(data: bytes, max_size: int, receiver: Receiver) -> int:
    """Hand ``receiver`` the messages of the whole frames at the front of ``data`` this path
    reads, while its queue has room (as ``WebSocketProtocol._read_events`` does); how many
    bytes they took. The rest is wsproto's."""
    at = 0
    while not receiver.queue_full():
        got = read_frame(data, at, max_size)
        if got is None:
            break
        message, size, at = got
        receiver.message_received(message, size)
    return at


def read_frame(data: bytes, at: int, max_size: int) -> tuple[str | bytes, int, int] | None:
    """The message in the frame at ``data[at:]``, its size in bytes and where the frame ends;
    None unless it is a whole frame this path takes (module docstring) of at most
    ``max_size`` bytes."""
    end = len(data)
    if end - at < 6:
        return None
    first = data[at]
    if first != _TEXT and first != _BINARY:
        return None
    size = data[at + 1] ^ 0x80  # the mask bit must be set: clear it, or the size is > 127
    if size < 126:
        start = at + 6
    elif size == 126 and end - at >= 8:
        size = (data[at + 2] << 8) | data[at + 3]
        if size < 126:
            return None  # not the shortest encoding: wsproto refuses it
        start = at + 8
    else:
        return None  # unmasked, 8-byte length, or not whole
    stop = start + size
    if stop > end or size > max_size:
        return None
    if size:
        mask = data[start - 4 : start]
        keys = (mask * ((size >> 2) + 1))[:size]
        payload = (
            int.from_bytes(data[start:stop], "little") ^ int.from_bytes(keys, "little")
        ).to_bytes(size, "little")
    else:
        payload = b""
    if first == _BINARY:
        return payload, size, stop
    try:
        return payload.decode(), size, stop
    except UnicodeDecodeError:
        return None  # wsproto closes with 1007


def frame(data: str | bytes) -> bytes:
    """A server's frame of one whole message (unmasked), as wsproto frames it."""
    if type(data) is str:
        payload = data.encode()
        first = _TEXT
    else:
        payload = data  # type: ignore[assignment]
        first = _BINARY
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return _HEAD16.pack(first, 126, size) + payload
    return _HEAD64.pack(first, 127, size) + payload

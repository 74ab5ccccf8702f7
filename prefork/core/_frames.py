"""Master <-> worker frames: a 4-byte big-endian length, then a JSON object.

Pure: no sockets here. JSON (never pickle) so a confused or hostile worker can at worst send a
frame the master refuses; a frame over ``max_frame`` is refused before it is buffered whole.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 1 << 20
#: Arrays and objects nested deeper than this are refused (in a frame or a control line).
MAX_DEPTH = 64

# Frame kinds. Worker -> master: READY, HEARTBEAT, MESSAGE, REPORT, RETIRE, FAILED (why it
# could not start: a traceback the master prints once), PROMOTED (the template it forked, or
# why not: the template's link comes with it as an fd). Master -> worker: MESSAGE, STOP (leave
# gracefully; its body says whether a new worker replaces this one), PROMOTE (fork the next
# generation's template: ``--refork-after``).
READY = "ready"
HEARTBEAT = "hb"
MESSAGE = "msg"
REPORT = "report"
RETIRE = "retire"
FAILED = "failed"
STOP = "stop"
PROMOTE = "promote"
PROMOTED = "promoted"
TO_MASTER = frozenset({READY, HEARTBEAT, MESSAGE, REPORT, RETIRE, FAILED, PROMOTED})
TO_WORKER = frozenset({MESSAGE, STOP, PROMOTE})
KINDS = TO_MASTER | TO_WORKER


class FrameError(ValueError):
    """A frame that cannot be accepted: too large, not JSON, or not a known kind."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: str
    body: Any = None


def encode(kind: str, body: Any = None, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Return the frame for ``(kind, body)``.

    Raises ``TypeError`` if ``body`` is not JSON-serialisable and ``FrameError`` if the encoded
    frame is larger than ``max_frame``.
    """
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind!r}")
    payload = json.dumps({"k": kind, "b": body}, separators=(",", ":")).encode()
    if len(payload) > max_frame:
        raise FrameError(f"frame of {len(payload)} bytes is over the {max_frame}-byte limit")
    return HEADER.pack(len(payload)) + payload


class Decoder:
    """Turns a byte stream into messages; feed it whatever ``recv`` returned."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, kinds: frozenset[str] = KINDS) -> None:
        self.max_frame = max_frame
        self.kinds = kinds  # the kinds this end accepts
        self._buffer = bytearray()

    @property
    def pending(self) -> bytes:
        """What was fed and makes no whole frame yet (the next image of the master feeds it
        to its decoder: ``prefork ctl upgrade``)."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """Return every message completed by ``data``; raise ``FrameError`` on a bad frame."""
        self._buffer += data
        messages: list[Message] = []
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if size > self.max_frame:
                raise FrameError(f"frame of {size} bytes is over the {self.max_frame}-byte limit")
            end = HEADER.size + size
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            messages.append(_parse(payload, self.kinds))
        return messages


def load_json(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``data`` parsed as JSON, its arrays and objects nested at most ``max_depth`` deep.

    Raises ``ValueError`` saying why for anything else: bytes that are not JSON, an integer
    longer than Python reads (4,300 digits), deeper nesting. Parsing alone is not enough:
    ``json.loads`` raises ``RecursionError`` near 1,000 levels, and a value just under that
    would raise the same later, out of the master's loop, when printed or compared.
    """
    try:
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except UnicodeDecodeError:
        raise ValueError("not JSON: not UTF-8") from None
    except RecursionError:
        raise ValueError(f"JSON nested more than {max_depth} deep") from None
    except ValueError:  # the only other one json.loads raises: int()'s digit limit
        raise ValueError("JSON with an integer of more than 4300 digits") from None
    # Counting brackets runs in C; only a payload with enough of them needs the walk.
    if data.count(b"[") + data.count(b"{") > max_depth and _deeper(value, max_depth):
        raise ValueError(f"JSON nested more than {max_depth} deep")
    return value


def _deeper(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests arrays and objects more than ``max_depth`` deep (no
    recursion: the stack holds at most one entry per element)."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > max_depth:
                    return True
                stack.append((child, depth + 1))
    return False


def _parse(payload: bytes, kinds: frozenset[str]) -> Message:
    try:
        frame = load_json(payload)
    except ValueError as exc:
        raise FrameError(f"frame refused: {exc}") from None
    if not isinstance(frame, dict) or frame.get("k") not in kinds:
        raise FrameError("frame is not an object with a known kind")
    return Message(frame["k"], frame.get("b"))

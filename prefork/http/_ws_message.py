"""A WebSocket message from wsproto's events, within the caps on its size and on its frames.

Pure: events in, the whole message out once it is whole, ``MessageTooBig`` past a cap (the
protocol then closes with 1009). wsproto gives one event per frame, or per read when a frame
is split across reads, so a frame is counted when its last event says it is finished: the
caps hold however the bytes come. The parts are joined as they come: held apart, a two-byte
frame cost a 48-byte object and a list slot (300,000 of them: +40 MiB of peak RSS, measured
with ``benchmarks/ws_memory.py``); joined, a frame costs its payload.
"""

from __future__ import annotations

from wsproto.events import BytesMessage, TextMessage

#: The most frames one message may come in; past it the socket closes with 1009, as for a
#: message over ``ws_max_size``. Browsers send a message as one frame, and a client streaming
#: the default 16 MiB in 4 KiB pieces fits. A frame costs the client 6 bytes and us about
#: 12 us, so a message that never ends (empty continuation frames) is refused after ~50 ms.
MAX_FRAGMENTS = 4096


class MessageTooBig(Exception):
    """A message past its caps on bytes or frames (close code 1009); ``str()`` says which."""


class Reassembly:
    """The message being received: its parts so far (UTF-8 for a text one) and how many
    frames they came in, at most ``max_size`` bytes in ``max_frames`` frames."""

    __slots__ = ("frames", "max_frames", "max_size", "parts", "text")

    def __init__(self, max_size: int, max_frames: int = MAX_FRAGMENTS) -> None:
        self.max_size = max_size
        self.max_frames = max_frames
        self.parts: bytearray | None = None  # None between messages
        self.text = False
        self.frames = 0  # of the message in ``parts``, those complete

    def add(self, event: TextMessage | BytesMessage) -> tuple[str | bytes, int] | None:
        """Take one event; once the message is whole, return it and its size in bytes.

        Raises ``MessageTooBig`` as soon as the message passes a cap.
        """
        # wsproto 1.x gives ``bytes`` (it builds each frame's payload with ``bytes()``); its
        # annotation also allows a bytearray. (Not ``cast()``: a call on every message.)
        data: str | bytes = event.data  # type: ignore[assignment]
        parts = self.parts
        if parts is None and event.message_finished:  # the usual case: one event, no copy
            if isinstance(data, str):
                size = len(data) if data.isascii() else len(data.encode())
            else:
                size = len(data)
            if size > self.max_size:
                raise MessageTooBig(f"message over {self.max_size} bytes")
            return data, size
        if parts is None:
            parts = self.parts = bytearray()
            self.text = isinstance(data, str)
        parts += data.encode() if isinstance(data, str) else data
        self.frames += event.frame_finished
        if len(parts) > self.max_size:
            raise MessageTooBig(f"message over {self.max_size} bytes")
        if self.frames > self.max_frames:
            raise MessageTooBig(f"message in over {self.max_frames} frames")
        if not event.message_finished:
            return None
        self.clear()
        # wsproto checked the UTF-8 as it came: decoding it again cannot fail
        return (parts.decode() if self.text else bytes(parts)), len(parts)

    def clear(self) -> None:
        """Drop the message in progress (the socket is closing)."""
        self.parts = None
        self.frames = 0

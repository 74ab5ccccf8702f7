"""What a WebSocket client's bytes can make the worker hold, with the worst input, split across
reads every way: the caps on a message's bytes and frames (``_ws_message.py``), and the
messages waiting for the app (``ws_max_queue`` of them, ``ws_max_size`` bytes of them)."""

from __future__ import annotations

import asyncio
import codecs
from typing import Any

import pytest
from _http_fakes import SPLITS, run, split
from _ws_fakes import BINARY, CONTINUATION, TEXT, WSHarness, frame
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage
from wsproto.extensions import PerMessageDeflate

from prefork.http._websocket import WebSocketProtocol
from prefork.http._ws_message import MAX_FRAGMENTS, MessageTooBig, Reassembly

Messages = list[dict[str, Any]]


def recorder(log: Messages, permits: asyncio.Queue[None] | None = None) -> Any:
    """Accept, then record every message; with ``permits``, take one message per permit."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            if permits is not None:
                await permits.get()
            message = await receive()
            log.append(message)
            if message["type"] == "websocket.disconnect":
                return

    return app


def closes(h: WSHarness) -> list[int]:
    return [int(e.code) for e in h.events() if isinstance(e, CloseConnection)]


def fragmented(opcode: int, parts: list[bytes]) -> bytes:
    """One message in ``parts``, one frame each."""
    last = len(parts) - 1
    return b"".join(
        frame(opcode if i == 0 else CONTINUATION, part, fin=i == last)
        for i, part in enumerate(parts)
    )


# --- the frames of one message ------------------------------------------------------------


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("payload", [b"ab", b""], ids=["two-bytes", "empty"])
def test_300000_fragments_are_refused_after_max_fragments_holding_only_their_payload(
    how: str, payload: bytes
) -> None:
    """The worst input: frames that each carry (almost) nothing. Empty ones never make the
    message grow, so only the frame cap ends such a message."""

    async def main() -> None:
        log: Messages = []
        h = WSHarness(recorder(log))
        await h.open()
        ws: WebSocketProtocol = h.socket
        more = frame(CONTINUATION, payload, fin=False)
        h.feed(frame(BINARY, payload, fin=False) + more * (MAX_FRAGMENTS - 1), how)
        assert ws.message.frames == MAX_FRAGMENTS and not h.transport.closed
        assert ws.message.parts == payload * MAX_FRAGMENTS  # one bytearray, no object a frame
        h.feed(more * (300_000 - MAX_FRAGMENTS - 1) + frame(CONTINUATION, payload), how)
        await h.settle()
        assert closes(h) == [1009] and h.transport.closed
        assert log == [
            {"type": "websocket.disconnect", "code": 1009, "reason": "message in over 4096 frames"}
        ]
        assert ws.message.parts is None

    run(main())


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "bytes"])
def test_a_message_of_max_fragments_frames_is_whole_however_split(how: str, opcode: int) -> None:
    async def main() -> None:
        log: Messages = []
        h = WSHarness(recorder(log))
        await h.open()
        # a two-byte character split between the first two frames
        parts = [b"\xc3", b"\xa9"] + [b"a"] * (MAX_FRAGMENTS - 2)
        h.feed(fragmented(opcode, parts), how)
        h.feed(frame(opcode, b"z"))  # and the next message, in one frame
        await h.until(lambda: len(log) == 2)
        if opcode == TEXT:
            assert [m["text"] for m in log] == ["é" + "a" * (MAX_FRAGMENTS - 2), "z"]
        else:
            assert [m["bytes"] for m in log] == [b"".join(parts), b"z"]
            assert all(type(m["bytes"]) is bytes for m in log)
        assert not h.transport.closed

    run(main())


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    ("at_limit", "over"),
    [
        (BytesMessage(data=bytes(100)), BytesMessage(data=bytes(101))),
        (TextMessage(data="é" * 50), TextMessage(data="é" * 50 + "x")),  # 51 characters
    ],
    ids=["bytes", "text"],
)
def test_one_frame_over_ws_max_size_closes_with_1009(how: str, at_limit: Any, over: Any) -> None:
    """A frame one byte too big, in one read (no copy is made of it) or in many."""

    async def main() -> None:
        log: Messages = []
        h = WSHarness(recorder(log), {"ws_max_size": 100})
        await h.open()
        h.send(at_limit, how)
        await h.until(lambda: len(log) == 1)
        h.send(over, how)
        await h.settle()
        assert closes(h) == [1009] and log[-1]["code"] == 1009
        kind = "text" if isinstance(at_limit, TextMessage) else "bytes"
        assert log[0] == {"type": "websocket.receive", kind: at_limit.data}

    run(main())


def events_of(wire: bytes, cuts: list[int]) -> list[Any]:
    """What a wsproto server makes of ``wire`` read in pieces ending at ``cuts``."""
    server = Connection(ConnectionType.SERVER)
    found: list[Any] = []
    start = 0
    for end in [*cuts, len(wire)]:
        server.receive_data(wire[start:end])
        found += server.events()
        start = end
    return found


@settings(max_examples=200, deadline=None, database=None)
@given(
    text=st.booleans(),
    payload=st.binary(max_size=40) | st.text(max_size=20).map(str.encode),
    data=st.data(),
)
def test_reassembly_gives_the_same_outcome_however_frames_and_reads_fall(
    text: bool, payload: bytes, data: st.DataObject
) -> None:
    """Any payload in any frames read in any pieces: the same message, or the same refusal."""
    if text:
        payload = payload.decode("utf-8", "replace").encode()
    inner = st.integers(0, len(payload))
    bounds = sorted(data.draw(st.lists(inner, max_size=8), "frame boundaries"))
    parts = [payload[a:b] for a, b in zip([0, *bounds], [*bounds, len(payload)], strict=True)]
    wire = fragmented(TEXT if text else BINARY, parts)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=20), "reads")))
    max_size = data.draw(st.integers(0, 41), "max_size")
    max_frames = data.draw(st.integers(1, 10), "max_frames")

    def outcome(cuts: list[int]) -> object:
        message = Reassembly(max_size, max_frames)
        try:
            for event in events_of(wire, cuts):
                whole = message.add(event)
        except MessageTooBig as exc:
            return str(exc)
        return whole

    expected: object = (payload.decode() if text else payload), len(payload)
    decoder = codecs.getincrementaldecoder("utf-8")()  # a text frame's bytes count once decoded
    size = 0
    for frames, part in enumerate(parts, 1):
        size += len(decoder.decode(part).encode()) if text else len(part)
        if size > max_size:
            expected = f"message over {max_size} bytes"
            break
        if frames > max_frames:
            expected = f"message in over {max_frames} frames"
            break
    assert outcome(cuts) == outcome(list(range(1, len(wire)))) == expected


# --- the messages waiting for the app -----------------------------------------------------


async def open_deflated(h: WSHarness) -> Connection:
    await h.open("Sec-WebSocket-Extensions: permessage-deflate", extensions=[PerMessageDeflate()])
    assert h.client is not None
    return h.client


def held(ws: WebSocketProtocol) -> int:
    """The bytes of messages a connection holds: waiting for the app, and being received."""
    return ws.session.queued_bytes + len(ws.message.parts or b"")


def queue_run(pieces_of: Any, max_size: int = 1 << 16, count: int = 16) -> None:
    """``count`` deflated messages of ``max_size`` zeros (~100 bytes each on the wire), sent at
    once to an app that takes one when allowed: at most one waits for it at a time, the rest
    stays in the kernel or in wsproto's buffer, still compressed."""

    async def main() -> None:
        log: Messages = []
        permits: asyncio.Queue[None] = asyncio.Queue()
        h = WSHarness(recorder(log, permits), {"ws_max_size": max_size})
        client = await open_deflated(h)
        ws: WebSocketProtocol = h.socket
        wire = b"".join(client.send(BytesMessage(data=bytes(max_size))) for _ in range(count))
        assert len(wire) * 100 < count * max_size  # deflate packs zeros 100:1 and better

        def check() -> None:
            assert held(ws) < 2 * max_size

        h.stream(pieces_of(wire), check)
        for taken in range(count):
            await h.settle_loop()
            # one message waits, inflated: reading is paused until the app takes it
            assert len(ws.session.queue) == 1 and ws.session.queued_bytes == max_size
            assert not h.transport.reading
            permits.put_nowait(None)
            await h.until(lambda: len(log) == taken + 1)  # noqa: B023
            h.pump(check)
        assert [len(m["bytes"]) for m in log] == [max_size] * count
        assert h.transport.reading and not h.kernel and ws.session.queued_bytes == 0

    run(main())


@pytest.mark.parametrize("how", SPLITS)
def test_deflated_messages_wait_compressed_once_ws_max_size_bytes_are_queued(how: str) -> None:
    queue_run(lambda wire: split(wire, how))


@settings(max_examples=25, deadline=None, database=None)
@given(data=st.data())
def test_the_queue_bound_holds_however_the_reads_fall(data: st.DataObject) -> None:
    def pieces(wire: bytes) -> list[bytes]:
        cuts = data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=40), "reads")
        ends = [*sorted(set(cuts)), len(wire)]
        return [wire[a:b] for a, b in zip([0, *ends], ends, strict=False)]

    queue_run(pieces, max_size=4096, count=6)


def test_the_queue_is_full_with_ws_max_queue_messages_or_ws_max_size_bytes() -> None:
    async def main() -> None:
        log: Messages = []
        permits: asyncio.Queue[None] = asyncio.Queue()
        h = WSHarness(recorder(log, permits), {"ws_max_size": 100, "ws_max_queue": 3})
        await h.open()
        ws: WebSocketProtocol = h.socket
        sizes = [10, 100, 10, 10, 10]
        h.stream([b"".join(frame(BINARY, bytes(n)) for n in sizes)])
        await h.settle_loop()
        # 10 then 100 bytes: 110 >= 100, full with two messages; the rest waits unparsed
        assert [s for _, s in ws.session.queue] == [10, 100] and not h.transport.reading
        permits.put_nowait(None)
        await h.until(lambda: len(log) == 1)
        assert ws.session.queued_bytes == 100 and not h.transport.reading  # still full
        permits.put_nowait(None)
        await h.until(lambda: len(log) == 2)
        # three messages of 10: full by count this time
        assert [s for _, s in ws.session.queue] == [10, 10, 10] and not h.transport.reading
        permits.put_nowait(None)
        await h.until(lambda: len(log) == 3)
        assert ws.session.queued_bytes == 20 and h.transport.reading
        assert [len(m["bytes"]) for m in log] == sizes[:3]

    run(main())


def test_a_read_that_comes_after_reading_paused_waits_unparsed() -> None:
    """A transport may deliver one more read after ``pause_reading`` (data it had already
    taken in): it waits in wsproto's buffer too."""

    async def main() -> None:
        log: Messages = []
        permits: asyncio.Queue[None] = asyncio.Queue()
        h = WSHarness(recorder(log, permits), {"ws_max_queue": 3})
        await h.open()
        ws: WebSocketProtocol = h.socket
        h.feed(b"".join(frame(TEXT, b"%d" % i) for i in range(3)))
        assert len(ws.session.queue) == 3 and not h.transport.reading
        h.feed(frame(TEXT, b"3"))
        assert len(ws.session.queue) == 3
        for _ in range(4):
            permits.put_nowait(None)
        await h.until(lambda: len(log) == 4)
        assert [m["text"] for m in log] == ["0", "1", "2", "3"] and h.transport.reading

    run(main())


@pytest.mark.parametrize("who", ["app", "peer"])
def test_a_message_in_progress_is_dropped_when_the_socket_closes(who: str) -> None:
    """Once a close frame goes out, no message reaches the app: what came of one is let go
    at once, not when the peer's close frame comes (up to 10 s later)."""

    async def main() -> None:
        closing = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await closing.wait()
            await send({"type": "websocket.close", "code": 1000})

        h = WSHarness(app)
        await h.open()
        ws: WebSocketProtocol = h.socket
        h.feed(frame(BINARY, bytes(1000), fin=False))
        assert ws.message.parts == bytes(1000)
        if who == "app":
            closing.set()
            await h.until(lambda: ws.message.parts is None)
            assert not h.transport.closed  # CLOSING: the peer's close frame is awaited
        else:
            h.send(CloseConnection(1001))
            assert ws.message.parts is None and h.transport.closed

    run(main())

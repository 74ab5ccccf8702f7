"""The WebSocket fast path (``_ws_fast``) against wsproto: frame by frame, and on random
sequences of frames (those it takes and those it leaves to wsproto: control frames,
fragments, reserved bits, bad UTF-8, long or unmasked frames) split across reads every way,
the app gets the same messages and the client the same bytes as with wsproto alone."""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import pytest
from _http_fakes import run
from _ws_fakes import BINARY, CONTINUATION, TEXT, WSHarness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage
from wsproto.extensions import PerMessageDeflate

from prefork.http import _ws_fast
from prefork.http._ws_fast import frame, read_frame, take_frames, wsproto_idle

PING, PONG, CLOSE = 0x9, 0xA, 0x8


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: bytes | None = b"\x01\x02\x03\x04",
    rsv: int = 0,
    long_form: bool = False,
) -> bytes:
    """A client's frame, built by hand (``long_form``: the 2-byte length even when 1 would do,
    which wsproto refuses)."""
    size = len(payload)
    masked = 0x80 if mask is not None else 0
    if size < 126 and not long_form:
        length = bytes([masked | size])
    elif size < 1 << 16:
        length = bytes([masked | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([masked | 127]) + size.to_bytes(8, "big")
    head = bytes([fin << 7 | rsv << 4 | opcode]) + length
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# -- frame by frame --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
@pytest.mark.parametrize("text", [True, False])
def test_our_frames_are_wsproto_s(size: int, text: bool) -> None:
    server = Connection(ConnectionType.SERVER)
    data: str | bytes = ("é" * size)[:size] if text else os.urandom(size)
    event = TextMessage(data) if isinstance(data, str) else BytesMessage(data)
    assert frame(data) == server.send(event)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (client_frame(TEXT, "héllo".encode()), ("héllo", 6)),
        (client_frame(BINARY, b"\0\xff" * 100), (b"\0\xff" * 100, 200)),
        (client_frame(TEXT), ("", 0)),
        (client_frame(BINARY, b"x" * 126), (b"x" * 126, 126)),
        (client_frame(BINARY, b"x" * 4000, mask=b"\0\0\0\0"), (b"x" * 4000, 4000)),
    ],
)
def test_frames_it_reads(data: bytes, expected: tuple[str | bytes, int]) -> None:
    assert read_frame(data + b"next", 0, 1 << 20) == (*expected, len(data))
    assert read_frame(b"ab" + data, 2, 1 << 20) == (*expected, len(data) + 2)


@pytest.mark.parametrize(
    "data",
    [
        client_frame(TEXT, b"abc", fin=False),  # a fragment
        client_frame(CONTINUATION, b"abc"),
        client_frame(PING, b"abc"),
        client_frame(CLOSE, b"\x03\xe8"),
        client_frame(TEXT, b"abc", rsv=4),  # RSV1: compressed
        client_frame(BINARY, b"abc", mask=None),  # unmasked
        client_frame(BINARY, b"abc", long_form=True),  # not the shortest length
        client_frame(BINARY, b"x" * 65536),  # an 8-byte length
        client_frame(TEXT, b"\xff\xfe"),  # not UTF-8
        client_frame(BINARY, b"x" * 101),  # over max_size (100)
        client_frame(BINARY, b"abc")[:-1],  # not whole yet
        client_frame(BINARY, b"x" * 200)[:7],  # its length not whole yet
        b"\x82\x80\x01",  # its mask not whole
    ],
)
def test_frames_it_leaves_to_wsproto(data: bytes) -> None:
    assert read_frame(data, 0, 100) is None


class Receiver:
    def __init__(self, room: int) -> None:
        self.room = room
        self.got: list[tuple[str | bytes, int]] = []

    def queue_full(self) -> bool:
        return len(self.got) >= self.room

    def message_received(self, data: str | bytes, size: int) -> None:
        self.got.append((data, size))


def test_take_frames_stops_at_a_frame_it_leaves_or_when_the_queue_is_full() -> None:
    one, two = client_frame(TEXT, b"a"), client_frame(BINARY, b"bc")
    ping = client_frame(PING)
    receiver = Receiver(room=10)
    assert take_frames(one + two + ping + one, 100, receiver) == len(one + two)
    assert receiver.got == [("a", 1), (b"bc", 2)]
    full = Receiver(room=1)
    assert take_frames(one + two, 100, full) == len(one) and full.got == [("a", 1)]


def test_wsproto_is_idle_only_between_messages() -> None:
    conn = Connection(ConnectionType.SERVER)
    assert wsproto_idle(conn)
    conn.receive_data(client_frame(TEXT, b"ab")[:3])  # a partial header: in its buffer
    list(conn.events())
    assert not wsproto_idle(conn)
    conn.receive_data(client_frame(TEXT, b"ab")[3:])
    list(conn.events())
    assert wsproto_idle(conn)
    conn.receive_data(client_frame(TEXT, b"a", fin=False))  # a fragmented message begins
    list(conn.events())
    assert not wsproto_idle(conn)
    conn.receive_data(client_frame(CONTINUATION, b"b"))
    list(conn.events())
    assert wsproto_idle(conn)


# -- the differential test -------------------------------------------------------------------


def echo(log: list[dict[str, Any]]) -> Any:
    """Accept, record every message, and echo it back."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            log.append(message)
            if message["type"] == "websocket.disconnect":
                return
            reply = {k: v for k, v in message.items() if k in ("text", "bytes")}
            await send({"type": "websocket.send", **reply})

    return app


async def serve(frames: bytes, cuts: list[int], fast: bool, options: dict[str, Any]) -> Any:
    """What the app got and the client read, the client's bytes cut at ``cuts`` and read as a
    kernel delivers them (not while reading is paused)."""
    log: list[dict[str, Any]] = []
    h = WSHarness(echo(log), options)
    await h.open()
    if not fast:
        h.socket._fast = False
    bounds = [0, *sorted(set(cuts)), len(frames)]
    pieces = [frames[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    h.stream(pieces)
    for _ in range(200):  # until the app has taken everything it can take
        await asyncio.sleep(0)
        h.pump()
    frames_out = h.out.partition(b"\r\n\r\n")[2]  # after the 101 (its Date may differ)
    return log, frames_out, h.transport.closed


MESSAGE = st.one_of(
    st.builds(lambda t: client_frame(TEXT, t.encode()), st.text(max_size=40)),
    st.builds(lambda b: client_frame(BINARY, b), st.binary(max_size=300)),
    st.builds(
        lambda m: client_frame(BINARY, b"x" * 126, mask=m), st.binary(min_size=4, max_size=4)
    ),
)
OTHER = st.one_of(
    st.builds(lambda p: client_frame(PING, p), st.binary(max_size=8)),
    st.builds(lambda p: client_frame(PONG, p), st.binary(max_size=8)),
    st.builds(
        lambda a, b: client_frame(TEXT, a, fin=False) + client_frame(CONTINUATION, b),
        st.binary(max_size=5).map(lambda b: b.hex().encode()),
        st.binary(max_size=5).map(lambda b: b.hex().encode()),
    ),
    st.just(client_frame(TEXT, b"\xc3")),  # bad UTF-8: 1007
    st.just(client_frame(BINARY, b"ab", rsv=4)),  # a reserved bit: 1002
    st.just(client_frame(BINARY, b"ab", long_form=True)),  # 1002
    st.just(client_frame(BINARY, b"ab", mask=None)),  # 1002
    st.just(client_frame(CONTINUATION, b"ab")),  # no message to continue: 1002
    st.just(client_frame(BINARY, b"y" * 70000)),  # an 8-byte length, over ws_max_size: 1009
    st.just(client_frame(CLOSE, b"\x03\xe8bye")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(st.one_of(MESSAGE, MESSAGE, OTHER), max_size=12).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
    queue=st.sampled_from([1, 2, 32]),
)
def test_the_same_messages_and_bytes_as_wsproto_alone(
    frames: bytes, cuts: list[int], queue: int
) -> None:
    options = {"ws_max_queue": queue, "ws_max_size": 65536}
    fast = run(serve(frames, cuts, True, options))
    slow = run(serve(frames, cuts, False, options))
    assert fast == slow


@pytest.mark.parametrize("cut", range(0, 30))
def test_every_split_of_two_messages_and_a_ping(cut: int) -> None:
    frames = client_frame(TEXT, b"hello") + client_frame(PING, b"p") + client_frame(BINARY, b"x")
    options = {"ws_max_queue": 32}
    assert run(serve(frames, [cut], True, options)) == run(serve(frames, [cut], False, options))


def test_a_compressed_socket_never_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any) -> int:
        raise AssertionError("the fast path ran")

    monkeypatch.setattr("prefork.http._websocket.take_frames", never)
    monkeypatch.setattr(_ws_fast, "take_frames", never)

    async def main() -> None:
        log: list[dict[str, Any]] = []
        h = WSHarness(echo(log))
        await h.open(
            "Sec-WebSocket-Extensions: permessage-deflate", extensions=[PerMessageDeflate()]
        )
        assert h.socket._fast is False
        h.send(TextMessage("squeeze me"))
        await h.until(lambda: bool(log))
        assert log == [{"type": "websocket.receive", "text": "squeeze me"}]
        await h.until(lambda: bool(h.events()))  # the echo, compressed, by wsproto

    run(main())

"""The WebSocket handshake's pure parts and the bounded per-message deflate."""

from __future__ import annotations

import tracemalloc
import zlib

import pytest
from _ws_fakes import ACCEPT, KEY
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, Opcode, RsvBits

from prefork.http._config import HTTPConfig
from prefork.http._framing import HeadDefaults
from prefork.http._ws_handshake import (
    INFLATE_STEP,
    BoundedDeflate,
    Offer,
    accept_response,
    accept_token,
    negotiate_deflate,
)


def test_the_accept_token_of_rfc_6455() -> None:
    assert accept_token(KEY.encode()) == ACCEPT


@pytest.mark.parametrize(
    ("offers", "answer"),
    [
        (["permessage-deflate"], "permessage-deflate"),
        (["x-webkit-deflate-frame", "permessage-deflate"], "permessage-deflate"),
        (
            ["permessage-deflate; server_max_window_bits=8", "permessage-deflate"],
            "permessage-deflate",
        ),  # 8 is not a window we take: the next offer is
        (["permessage-deflate; client_max_window_bits=x"], None),
        (
            ["permessage-deflate; client_no_context_takeover; server_max_window_bits=10"],
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
        ),
        (["x-other"], None),
    ],
)
def test_deflate_negotiation(offers: list[str], answer: str | None) -> None:
    found = negotiate_deflate(offers, 1000)
    assert (found[1] if found else None) == answer


def test_the_101_keeps_the_apps_date_and_server_and_adds_the_operators_headers() -> None:
    head = accept_response(
        Offer(KEY.encode(), [], []),
        subprotocol=None,
        headers=[(b"Date", b"today"), ("server", "mine")],
        extension=None,
        defaults=HeadDefaults(extra=b"x-op: 1\r\n"),
    )
    assert head.endswith(b"date: today\r\nserver: mine\r\nx-op: 1\r\n\r\n")
    bare = accept_response(
        Offer(KEY.encode(), [], []),
        subprotocol=None,
        headers=None,
        extension=None,
        defaults=HeadDefaults(date=False, server=False),
    )
    assert bare == (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-accept: " + ACCEPT + b"\r\n\r\n"
    )


def pair(max_size: int, **options: bool) -> tuple[Connection, Connection]:
    """A client offering deflate and a server with ``BoundedDeflate``, agreed."""
    found = negotiate_deflate(["permessage-deflate"], max_size)
    assert found is not None
    ours, answer = found
    for name, value in options.items():
        setattr(ours, name, value)
    theirs = PerMessageDeflate(**options)
    theirs.finalize(answer)
    return Connection(ConnectionType.CLIENT, [theirs]), Connection(ConnectionType.SERVER, [ours])


def test_a_deflate_bomb_is_refused_without_inflating_it() -> None:
    """100 MiB of zeros deflates to ~100 KiB; at the default ``--ws-max-size`` (16 MiB) the
    server holds the limit and one ``INFLATE_STEP`` more at most (zlib in one call would
    hold it twice: 32 MiB), then refuses it. The README quotes this figure."""
    max_size = HTTPConfig(app="main:app").ws_max_size
    assert max_size == 16 << 20
    client, server = pair(max_size)
    bomb = client.send(BytesMessage(data=bytes(100 << 20)))
    assert len(bomb) < 110_000
    tracemalloc.start()
    try:
        server.receive_data(bomb)
        events = list(server.events())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [int(e.code) for e in events] == [CloseReason.MESSAGE_TOO_BIG]  # type: ignore[attr-defined]
    assert peak < max_size + INFLATE_STEP + (1 << 20)


def test_a_message_inflated_in_several_steps_comes_out_whole() -> None:
    client, server = pair(16 << 20)
    data = b"".join(b"%08d" % i for i in range(3 * INFLATE_STEP // 8))  # 3 MiB
    wire = client.send(BytesMessage(data=data))
    assert len(wire) < len(data) // 2
    server.receive_data(wire)
    assert [e.data for e in server.events()] == [data]  # type: ignore[attr-defined]


@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_compressed_messages_with_a_ping_between_fragments(no_context_takeover: bool) -> None:
    options = {"client_no_context_takeover": no_context_takeover}
    client, server = pair(1 << 20, **options)
    for _ in range(2):  # the second message reuses (or resets) the inflate context
        data = client.send(TextMessage(data="a" * 300, message_finished=False))
        data += client.send(Ping(b"x"))
        data += client.send(TextMessage(data="b" * 300, message_finished=True))
        server.receive_data(data)
        events = list(server.events())
        text = "".join(e.data for e in events if isinstance(e, TextMessage))
        assert text == "a" * 300 + "b" * 300
        assert [e.payload for e in events if isinstance(e, Ping)] == [b"x"]


def test_an_uncompressed_message_passes_a_deflate_connection() -> None:
    """Compression is per message: a client may send one without RSV1."""
    _, server = pair(1 << 20)
    plain = Connection(ConnectionType.CLIENT)
    server.receive_data(plain.send(TextMessage(data="plain")))
    assert [e.data for e in server.events()] == ["plain"]  # type: ignore[attr-defined]


def test_corrupt_deflate_data_closes_with_1007() -> None:
    client, server = pair(1 << 20)
    frame = bytearray(client.send(BytesMessage(data=b"hello" * 10)))
    header = 6  # 2 bytes + a 4-byte mask: the payload is masked, so flip a masked byte
    frame[header] ^= 0xFF
    frame[header + 1] ^= 0xFF
    server.receive_data(bytes(frame))
    assert [int(e.code) for e in server.events()] == [CloseReason.INVALID_FRAME_PAYLOAD_DATA]  # type: ignore[attr-defined]


def test_a_compressed_control_frame_is_a_protocol_error() -> None:
    ours = BoundedDeflate(10)
    decoder = FrameDecoder(client=False)
    assert ours.frame_inbound_header(decoder, Opcode.PING, RsvBits(True, False, False), 0) == (
        CloseReason.PROTOCOL_ERROR
    )


def test_the_wsproto_internals_bounded_deflate_relies_on() -> None:
    """wsproto 1.x keeps the inbound state in these; a wsproto that renames them fails here."""
    deflate = PerMessageDeflate()
    for name in ("_decompressor", "_inbound_compressed", "_inbound_is_compressible"):
        assert hasattr(deflate, name)
    assert isinstance(zlib.decompressobj(-15).decompress(b"", 1), bytes)

"""The frame codec, byte by byte: every split of a stream must decode the same."""

from __future__ import annotations

import random

import pytest

from prefork import _frames as frames


def stream() -> bytes:
    return (
        frames.encode(frames.READY)
        + frames.encode(frames.MESSAGE, {"n": 1, "text": "héllo"})
        + frames.encode(frames.REPORT, [1, 2.5, None])
    )


EXPECTED = [
    frames.Message("ready", None),
    frames.Message("msg", {"n": 1, "text": "héllo"}),
    frames.Message("report", [1, 2.5, None]),
]


def test_whole_stream() -> None:
    assert frames.Decoder().feed(stream()) == EXPECTED


def test_byte_by_byte() -> None:
    decoder = frames.Decoder()
    got: list[frames.Message] = []
    data = stream()
    for i in range(len(data)):
        got += decoder.feed(data[i : i + 1])
    assert got == EXPECTED


@pytest.mark.parametrize("seed", range(20))
def test_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    data = stream()
    cuts = sorted(rng.sample(range(1, len(data)), 5))
    decoder = frames.Decoder()
    got: list[frames.Message] = []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        got += decoder.feed(data[start:end])
    assert got == EXPECTED


def test_every_split_point_of_one_frame() -> None:
    data = frames.encode(frames.MESSAGE, {"k": "v"})
    for i in range(len(data) + 1):
        decoder = frames.Decoder()
        assert decoder.feed(data[:i]) + decoder.feed(data[i:]) == [
            frames.Message("msg", {"k": "v"})
        ]


def test_oversized_frame_is_refused_from_its_header() -> None:
    decoder = frames.Decoder(max_frame=100)
    with pytest.raises(frames.FrameError, match="101 bytes is over the 100-byte limit"):
        decoder.feed(frames.HEADER.pack(101))


def test_encode_refuses_oversized_and_unknown_kinds() -> None:
    with pytest.raises(frames.FrameError, match="over the 64-byte limit"):
        frames.encode(frames.MESSAGE, "x" * 100, max_frame=64)
    with pytest.raises(frames.FrameError, match="unknown frame kind"):
        frames.encode("nope")
    with pytest.raises(TypeError):
        frames.encode(frames.MESSAGE, object())


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe", b"{not json", b"[1, 2]", b'{"k": "bogus"}', b'{"b": 1}'],
)
def test_malformed_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(frames.FrameError):
        frames.Decoder().feed(frames.HEADER.pack(len(payload)) + payload)

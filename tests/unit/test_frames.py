"""The frame codec, byte by byte: every split of a stream must decode the same."""

from __future__ import annotations

import random

import pytest

from prefork.core import _frames as frames


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


def test_a_stream_cut_anywhere_goes_on_in_another_decoder() -> None:
    """An upgrade hands the bytes of a frame half read (``pending``) to the next image's
    decoder: whatever the cut, the messages come out once each."""
    data = stream()
    for i in range(len(data) + 1):
        first = frames.Decoder()
        got = first.feed(data[:i])
        second = frames.Decoder()
        assert got + second.feed(first.pending) + second.feed(data[i:]) == EXPECTED


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


def raw(payload: bytes) -> bytes:
    return frames.HEADER.pack(len(payload)) + payload


def nested(depth: int, inner: bytes = b"1") -> bytes:
    return b"[" * depth + inner + b"]" * depth


# What json.loads raises beside JSONDecodeError: RecursionError near 1,000 levels, ValueError
# for an integer over 4,300 digits. Each must be a FrameError (the worker is replaced), never
# an exception out of the master's loop.
@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"k":"hb","b":' + b"9" * 5000 + b"}", "integer of more than 4300 digits"),
        (b'{"k":"hb","b":' + nested(2000) + b"}", "nested more than 64 deep"),
        (b'{"k":"hb","b":' + nested(100_000) + b"}", "nested more than 64 deep"),
        (b'{"k":"msg","b":' + nested(64) + b"}", "nested more than 64 deep"),
        (b'{"k":"msg","b":' + b'{"a":' * 70 + b"1" + b"}" * 70 + b"}", "nested more than 64"),
        (b"\xff\xfe\x00", "not JSON"),
    ],
)
def test_hostile_json_is_a_frame_error(payload: bytes, reason: str) -> None:
    with pytest.raises(frames.FrameError, match=reason):
        frames.Decoder().feed(raw(payload))


def test_nesting_up_to_the_limit_is_read() -> None:
    # The frame object is the first level: 63 more fit.
    body = frames.load_json(nested(63))
    assert frames.Decoder().feed(raw(b'{"k":"msg","b":' + nested(63) + b"}")) == [
        frames.Message("msg", body)
    ]
    assert frames.load_json(b'"' + b"[" * 1000 + b'"') == "[" * 1000  # brackets in a string


def test_an_integer_of_4300_digits_is_read() -> None:
    assert frames.load_json(b"9" * 4300) == int("9" * 4300)


@pytest.mark.parametrize(
    "data",
    [nested(65), b'{"a":' * 65 + b"1" + b"}" * 65, b"[" + b"[1]," * 500 + nested(64) + b"]"],
)
def test_load_json_counts_depth_across_arrays_and_objects(data: bytes) -> None:
    with pytest.raises(ValueError, match="nested more than 64 deep"):
        frames.load_json(data)
    assert frames.load_json(data, max_depth=66) is not None

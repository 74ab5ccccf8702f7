"""The raw lines of heads, trailers and chunked bodies, pure: every split point of the input
gives the same verdict, and nothing is searched twice."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from _http_fakes import SPLITS, split

from prefork.http._lines import ChunkScanner, FieldLines, Limits, Refused, quick_head_end

SMALL = Limits(line=20, field=12, head=60, fields=10)
DEFAULT = Limits(line=8190, field=8190, head=65536, fields=100)


def refusal(check: Callable[[], object]) -> tuple[int, bytes] | None:
    """``(status, reason)`` of the ``Refused`` that ``check()`` raises, None if it passes."""
    try:
        check()
    except Refused as exc:
        return exc.status, exc.reason
    return None


def verdict(data: bytes, how: str, limits: Limits = SMALL, *, request_line: bool = True) -> Any:
    """Feed ``data`` in pieces to one growing buffer: the section's end, or the refusal."""
    lines = FieldLines(limits, request_line=request_line)
    buf = bytearray()
    end = -1
    try:
        for piece in split(data, how, seed=4):
            buf += piece
            end = lines.feed(buf)
            if end != -1:
                return end
    except Refused as exc:
        return exc.status, exc.reason
    return end


LINE_LONG = (414, b"Request line too long.\n")
FIELD_LONG = (431, b"Request header field too large.\n")
TOO_BIG = (431, b"Request header fields too large.\n")
TOO_MANY = (431, b"Too many request header fields.\n")
BARE_LF = (400, b"Bare LF in the request head.\n")
BAD_BYTE = (400, b"Invalid character in the request head.\n")
FOLD = (400, b"Obsolete line folding in the request head.\n")


FIELDS = b"GET\r\n" + b"X: 1234567\r\n" * 4  # 53 bytes, every line at its limit (12 with CRLF)


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET / HTTP/1.1\r\nA: 12345\r\n\r\nNEXT", 28),
        (b"GET /123456 HTTP/1.1\r\n\r\n", 24),  # a request line of 20 bytes: the limit
        (b"GET /1234567 HTTP/1.1\r\n\r\n", LINE_LONG),
        (b"GET /1234567 HTTP/1.1", -1),  # 21 bytes: a CR may still come
        (b"GET /1234567 HTTP/1.1\n", LINE_LONG),  # it did not
        (b"GET /12345678 HTTP/1.1", LINE_LONG),  # 22 bytes: too long whatever comes
        (b"GET\r\nX: 12345678\r\n\r\n", FIELD_LONG),  # 13 bytes with its CRLF
        (b"GET\r\nX: 1234567\r", -1),  # 11 bytes: its LF may still make it 12
        (b"GET\r\nX: 123456789", FIELD_LONG),  # 12 bytes and no CRLF yet: 14 at least
        (FIELDS + b"A: 1\r\n\r\n", TOO_BIG),  # 61 bytes with the blank line
        (FIELDS + b"A: 12345", TOO_BIG),  # over 60 before its LF
        (FIELDS + b"A: 1\r\n", -1),
        (FIELDS + b"A\n", BARE_LF),
        (b"GET\nA: 1\r\n\r\n", BARE_LF),
        (b"GET\r\nA: 1\n\r\n", BARE_LF),
        (b"GET\r\nA: 1\r\n\n", BARE_LF),  # the blank line too
        (b"GET\r\nA: \x01\r\n\r\n", BAD_BYTE),
        (b"GET\r\nA: \x7f\r\n\r\n", BAD_BYTE),
        (b"GET\r\nA: \x00\r\n\r\n", BAD_BYTE),
        (b"GET\r\nA: x\ry\r\n\r\n", BAD_BYTE),  # a bare CR
        (b"GET\r\nA: x\r\r\n\r\n", BAD_BYTE),
        (b"G\x01T\r\n\r\n", BAD_BYTE),  # in the request line too
        (b"GET\r\nA: \tx\t\x80\xff\r\n\r\n", 17),  # HTAB and obs-text are fine
        (b"GET\r\nA: 1\r\n b\r\n\r\n", FOLD),
        (b"GET\r\nA: 1\r\n\tb\r\n\r\n", FOLD),
        (b"GET\r\n A: 1\r\n\r\n", FOLD),  # whitespace before the first field
        # a line over two limits answers for the one it crossed first: 7 bytes were left
        (FIELDS + b"Y: 123456789012", TOO_BIG),
        (FIELDS + b"Y: 123456789012\r\n", TOO_BIG),
    ],
)
def test_each_line_is_checked_once_in_order_whatever_the_split(
    data: bytes, expected: Any, how: str
) -> None:
    assert verdict(data, how) == expected


@pytest.mark.parametrize("how", SPLITS)
def test_too_many_fields_are_refused_when_the_head_ends(how: str) -> None:
    few = Limits(line=20, field=10, head=60, fields=3)
    assert verdict(b"GET\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", how, few) == 25
    assert verdict(b"GET\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4", how, few) == -1
    # counted as they come, decided at the blank line: the client may finish sending
    assert verdict(b"GET\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n", how, few) == -1
    assert verdict(b"GET\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", how, few) == TOO_MANY
    # every line is still checked as it ends, so a bad line answers first
    assert verdict(b"GET\r\nA: 1\r\nB: \x01\r\nC: 3\r\nD: 4\r\n", how, few) == BAD_BYTE
    assert verdict(b"GET\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: \x01\r\n", how, few) == BAD_BYTE
    # and the size limits bound how much a client may send before the verdict
    many = b"GET\r\n" + b"A: 1\r\n" * 12
    assert verdict(many, how, few) == TOO_BIG


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    ("limits", "data", "expected"),
    [
        # the request line crosses the head limit (10) before its own (20): 431, not 414
        (Limits(line=20, field=20, head=10, fields=3), b"GET /" + b"a" * 30, TOO_BIG),
        (Limits(line=20, field=20, head=10, fields=3), b"GET /" + b"a" * 30 + b"\r\n", TOO_BIG),
        # both at the same byte: the line's own limit answers
        (Limits(line=10, field=20, head=11, fields=3), b"GET /" + b"a" * 30 + b"\r\n", LINE_LONG),
    ],
)
def test_the_limit_crossed_first_answers(
    limits: Limits, data: bytes, expected: Any, how: str
) -> None:
    assert verdict(data, how, limits) == expected


@pytest.mark.parametrize("how", SPLITS)
def test_trailer_sections_have_no_request_line(how: str) -> None:
    assert verdict(b"\r\nNEXT", how, request_line=False) == 2
    assert verdict(b"A: 1\r\nB: 2\r\n\r\n", how, request_line=False) == 14
    assert verdict(b"A: 1\r\n b\r\n\r\n", how, request_line=False) == FOLD
    assert verdict(b"A:1\r\n" * 11 + b"\r\n", how, request_line=False) == TOO_MANY
    assert verdict(b"X: 1234567\r\n" * 5 + b"\r\n", how, request_line=False) == TOO_BIG


def field_line(size: int) -> bytes:
    """A field line of ``size`` bytes, its CRLF included."""
    return b"X: " + b"v" * (size - 5) + b"\r\n"


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("limit", [5, 12, 98, 8190])
def test_a_field_line_counts_its_crlf_as_gunicorn_does(limit: int, how: str) -> None:
    """gunicorn refuses a field line over ``--limit-request-field_size`` with its CRLF: at
    98, a line of 97 bytes and its CRLF (99). The request line's limit leaves its CRLF out."""
    limits = Limits(line=8, field=limit, head=10_000, fields=10)
    at_limit = b"GET / 1\r\n" + field_line(limit) + b"\r\n"
    assert verdict(at_limit, how, limits) == len(at_limit)
    assert verdict(b"GET / 1\r\n" + field_line(limit + 1) + b"\r\n", how, limits) == FIELD_LONG
    assert verdict(b"GET / 12\r\n\r\n", how, limits) == 12  # 8 bytes and CRLF: fine
    assert verdict(b"GET / 123\r\n\r\n", how, limits) == LINE_LONG
    # a trailer section's field lines count the same
    trailer = field_line(limit) + b"\r\n"
    assert verdict(trailer, how, limits, request_line=False) == len(trailer)
    over = field_line(limit + 1) + b"\r\n"
    assert verdict(over, how, limits, request_line=False) == FIELD_LONG


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("limit", [1, 2])
def test_under_a_limit_below_a_field_line_the_blank_line_still_ends_the_section(
    limit: int, how: str
) -> None:
    limits = Limits(line=20, field=limit, head=60, fields=10)
    assert verdict(b"GET / HTTP/1.0\r\n\r\n", how, limits) == 18
    assert verdict(b"\r\n", how, limits, request_line=False) == 2
    assert verdict(b"GET / HTTP/1.0\r\nA:\r\n\r\n", how, limits) == FIELD_LONG
    assert verdict(b"GET / HTTP/1.0\r\nA\n\r\n", how, limits) == BARE_LF


class Watched(bytearray):
    """A buffer that counts the bytes its ``find`` calls look at."""

    looked = 0

    def find(self, sub: Any, start: Any = 0, *rest: Any) -> int:  # type: ignore[override]
        found = super().find(sub, start, *rest)
        self.looked += (len(self) if found == -1 else found + 1) - start
        return found


def test_bytes_already_searched_are_not_searched_again() -> None:
    head = b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"v" * 8000 + b"\r\n" + b"A: 1\r\n" * 90 + b"\r\n"
    lines = FieldLines(DEFAULT, request_line=True)
    buf = Watched()
    for i in range(len(head)):
        buf += head[i : i + 1]
        end = lines.feed(buf)
    assert end == len(head)
    assert buf.looked <= len(head)


def test_the_quick_path_only_ever_agrees() -> None:
    clean = b"GET / HTTP/1.1\r\nHost: t\r\nA: \tb\x80\r\n\r\nBODY"
    assert quick_head_end(clean, DEFAULT) == verdict(clean, "whole", DEFAULT) == len(clean) - 4
    assert quick_head_end(bytearray(clean[:-4]), DEFAULT) == len(clean) - 4
    for unsure in [
        clean[:-6],  # incomplete
        b"GET / HTTP/1.1\r\nHost: " + b"t" * 9000 + b"\r\n\r\n",  # long
        b"GET / HTTP/1.1\nHost: t\r\n\r\n",  # a bare LF
        b"GET / HTTP/1.1\r\nHost: t\r\rX: y\r\n\r\n",  # a bare CR
        b"GET / HTTP/1.1\r\nHost: t\x7f\r\n\r\n",  # a control byte
        b"GET / HTTP/1.1\r\nHost: t\r\n b\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\r\nHost: t\r\n\tb\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"A: 1\r\n" * 101 + b"\r\n",  # too many fields
    ]:
        assert quick_head_end(unsure, DEFAULT) == -1
    assert quick_head_end(b"GET / HTTP/1.1\r\n" + b"A: 1\r\n" * 100 + b"\r\n", DEFAULT) > 0


# -- chunked bodies ----------------------------------------------------------------------------

GOOD_BODY = (
    b'1a;n=v;m="q\\"\x80"\r\n' + b"z" * 26 + b"\r\n3\r\nabc\r\n0;end\r\nT: 1\r\n\r\nNEXT \r\n"
)


def scan(
    data: bytes, how: str, *, body_limit: int = 0, line_limit: int = 100
) -> tuple[int, bytes] | None:
    scanner = ChunkScanner(body_limit, Limits(line=100, field=line_limit, head=200, fields=3))

    def feed_all() -> None:
        for piece in split(data, how, seed=1):
            scanner.feed(piece)

    return refusal(feed_all)


@pytest.mark.parametrize("how", SPLITS)
def test_chunk_scanner_passes_good_bodies_and_stops_after_the_trailer_section(how: str) -> None:
    assert scan(GOOD_BODY + b"\x00 \r\r\n", how) is None  # what follows is not its business
    assert scan(GOOD_BODY, how, body_limit=29) is None


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"1;a\rb\r\nx\r\n0\r\n\r\n", 400),
        (b"1;a\x00\r\nx\r\n0\r\n\r\n", 400),
        (b"1\r\nx\r\n0 \r\n\r\n", 400),
        (b"1 ;a\r\nx\r\n", 400),  # whitespace after the size, even before an extension
        (b"1\nx\r\n", 400),  # bare LF ends no chunk-size line
        (b"1\r\nxY\n0\r\n\r\n", 400),  # chunk data not followed by CRLF
        (b"1\r\nx\rY0\r\n\r\n", 400),
        (b"g\r\n", 400),
        (b"1" * 21 + b"\r\n", 400),  # more hex digits than h11 reads
        (b"1;" + b"a" * 97 + b"\r\n", 400),  # a line of 101 bytes
        (b"1;" + b"a" * 200, 400),  # ... also before its end arrives
        (GOOD_BODY, 413),
        # trailers fall under the limits of a head (fields 3, head 200, field 100)
        (b"0\r\n" + b"T: 1\r\n" * 4 + b"\r\n", 431),
        (b"0\r\n" + (b"T: " + b"t" * 85 + b"\r\n") * 3 + b"\r\n", 431),
        (b"0\r\nT: " + b"t" * 120, 431),
        (b"0\r\nT: 1\r\n x\r\n\r\n", 400),  # obs-fold
        (b"0\r\nT: \x01\r\n\r\n", 400),
        (b"0\r\nT: 1\n\n", 400),
    ],
)
def test_chunk_scanner_refuses(data: bytes, status: int, how: str) -> None:
    result = scan(data, how, body_limit=28)
    assert result is not None and result[0] == status


@pytest.mark.parametrize("how", SPLITS)
def test_chunk_size_lines_and_trailer_field_lines_count_their_crlf(how: str) -> None:
    chunk_line = b"1;" + b"a" * 96 + b"\r\n"  # 100 bytes: the limit
    assert scan(chunk_line + b"x\r\n0\r\n\r\n", how) is None
    long_line = b"1;" + b"a" * 97 + b"\r\nx\r\n0\r\n\r\n"
    assert scan(long_line, how) == (400, b"Chunk header too long.\n")
    assert scan(b"0\r\n" + field_line(100) + b"\r\n", how) is None
    assert scan(b"0\r\n" + field_line(101) + b"\r\n", how) == FIELD_LONG


def test_chunk_scanner_reads_from_an_offset_and_counts_the_whole_body() -> None:
    scanner = ChunkScanner(5, DEFAULT)
    scanner.feed(b"HEAD\r\n\r\n3\r\nabc\r\n", 8)
    scanner.feed(b"2\r\nde\r\n")
    assert refusal(lambda: scanner.feed(b"1\r\n")) == (413, b"Request body too large.\n")


def test_chunk_line_regex_is_linear_on_hostile_input() -> None:
    # This process's CPU time, not the clock: a busy machine must not fail it. Backtracking
    # on these 400 KB lines would take hours; linear scanning takes milliseconds.
    start = time.process_time()
    hostile = [
        b"1" + b";a" + b" \t" * 200_000 + b"=\r\n",
        b"1;a" + b";a=b " * 100_000 + b"\x00\r\n",
    ]
    for data in hostile:
        scanner = ChunkScanner(0, Limits(line=10**6, field=10**6, head=10**6, fields=100))
        assert refusal(partial(scanner.feed, data)) == (400, b"Invalid chunk header.\n")
    assert time.process_time() - start < 2.0

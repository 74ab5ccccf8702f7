"""Request checks on top of h11, pure."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import h11
import pytest
from _http_fakes import SPLITS, split

from prefork.http._parse import (
    HEAD_END,
    ChunkScanner,
    Refused,
    RequestInfo,
    check_raw_head,
    inspect_request,
)

LIMITS = {"line_limit": 20, "field_limit": 10, "head_limit": 60}


def refusal(check: Callable[[], object]) -> tuple[int, bytes] | None:
    """``(status, reason)`` of the ``Refused`` that ``check()`` raises, None if it passes."""
    try:
        check()
    except Refused as exc:
        return exc.status, exc.reason
    return None


def raw_head(buf: bytes, end: int) -> tuple[int, bytes] | None:
    return refusal(lambda: check_raw_head(buf, end, **LIMITS))


def test_h11_keeps_the_triples_we_read() -> None:
    # _parse reads h11's Headers._full_items directly for speed; this fails if h11 changes.
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX-Y: Z\r\n\r\n")
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    assert event.headers._full_items == [(b"Host", b"host", b"a"), (b"X-Y", b"x-y", b"Z")]


def test_raw_head_limits() -> None:
    assert raw_head(b"GET / HTTP/1.1\r\n", -1) is None
    assert raw_head(b"G" * 22, -1) == (414, b"Request line too long.\n")
    assert raw_head(b"G" * 23 + b"\n", -1) == (414, b"Request line too long.\n")
    assert raw_head(b"GET\r\nX: 123456789012", -1) == (431, b"Request header field too large.\n")
    assert raw_head(b"G" * 61, -1) == (431, b"Request header fields too large.\n")
    head = b"GET /123456789 HTTP/1.1\r\n\r\n"
    assert raw_head(head, len(head)) == (414, b"Request line too long.\n")
    head = b"GET / HTTP/1.1\r\nX: 1234567890\r\n\r\n"
    assert raw_head(head, len(head)) == (431, b"Request header field too large.\n")
    head = b"GET / HTTP/1.1\r\nX: 12345\r\n\r\n"
    assert raw_head(head, len(head)) is None
    assert raw_head(b"GET /\n\n", 7) is None


def test_head_end_matches_h11s_rule() -> None:
    for raw in (b"a\r\n\r\n", b"a\n\n", b"a\n\r\n"):
        match = HEAD_END.search(raw)
        assert match is not None and match.end() == len(raw)


def parse(raw: bytes) -> RequestInfo:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return inspect_request(event, raw, raw.index(b"\r\n\r\n") + 4, field_count_limit=3)


def test_request_facts() -> None:
    raw = b"POST /p?q HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\nabc"
    info = parse(raw)
    assert (info.method, info.path, info.http_version, info.head_end) == (
        b"POST", b"/p?q", b"1.1", len(raw) - 3,
    )  # fmt: skip
    assert (info.has_body, info.keep_alive, info.expect_continue, info.websocket) == (
        True, True, True, False,
    )  # fmt: skip
    info = parse(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\nUpgrade: WebSocket\r\n\r\n"
    )
    assert (info.has_body, info.keep_alive, info.websocket) == (False, False, True)
    info = parse(b"POST / HTTP/1.0\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n")
    assert (info.has_body, info.keep_alive, info.expect_continue) == (False, False, False)
    assert info.http_version == b"1.0"
    too_many = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    assert refusal(lambda: parse(too_many)) == (431, b"Too many request header fields.\n")


def test_request_facts_for_bodies() -> None:
    info = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 012\r\n\r\n")
    assert (info.has_body, info.chunked, info.content_length) == (True, False, 12)
    info = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert (info.has_body, info.chunked, info.content_length) == (False, False, 0)
    info = parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert (info.has_body, info.chunked, info.content_length) == (True, True, 0)


GOOD_BODY = (
    b'1a;n=v;m="q\\"\x80"\r\n' + b"z" * 26 + b"\r\n3\r\nabc\r\n0;end\r\nT: 1\r\n\r\nNEXT \r\n"
)


def scan(
    data: bytes, how: str, *, body_limit: int = 0, line_limit: int = 100
) -> tuple[int, bytes] | None:
    scanner = ChunkScanner(body_limit, line_limit)

    def feed_all() -> None:
        for piece in split(data, how, seed=1):
            scanner.feed(piece)

    return refusal(feed_all)


@pytest.mark.parametrize("how", SPLITS)
def test_chunk_scanner_passes_good_bodies_and_stops_after_the_last_chunk(how: str) -> None:
    # after "0;end" it ignores the trailer and whatever follows (h11 checks those)
    assert scan(GOOD_BODY + b"\x00 \r\r\n", how) is None
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
        (b"g\r\n", 400),
        (b"1" * 21 + b"\r\n", 400),  # more hex digits than h11 reads
        (b"1;" + b"a" * 97 + b"\r\n", 400),  # a line of 101 bytes
        (b"1;" + b"a" * 200, 400),  # ... also before its end arrives
        (GOOD_BODY, 413),
    ],
)
def test_chunk_scanner_refuses(data: bytes, status: int, how: str) -> None:
    result = scan(data, how, body_limit=28)
    assert result is not None and result[0] == status


def test_chunk_scanner_reads_from_an_offset_and_counts_the_whole_body() -> None:
    scanner = ChunkScanner(5, 100)
    scanner.feed(b"HEAD\r\n\r\n3\r\nabc\r\n", 8)
    scanner.feed(b"2\r\nde\r\n")
    assert refusal(lambda: scanner.feed(b"1\r\n")) == (413, b"Request body too large.\n")


def test_chunk_line_regex_is_linear_on_hostile_input() -> None:
    start = time.perf_counter()
    hostile = [
        b"1" + b";a" + b" \t" * 200_000 + b"=\r\n",
        b"1;a" + b";a=b " * 100_000 + b"\x00\r\n",
    ]
    for data in hostile:
        scanner = ChunkScanner(0, 10**6)
        assert refusal(partial(scanner.feed, data)) == (400, b"Invalid chunk header.\n")
    assert time.perf_counter() - start < 1.0

"""Request checks on top of h11, pure."""

from __future__ import annotations

import h11

from prefork.http._parse import HEAD_END, RequestInfo, check_raw_head, inspect_request

LIMITS = {"line_limit": 20, "field_limit": 10, "head_limit": 60}


def test_h11_keeps_the_triples_we_read() -> None:
    # _parse reads h11's Headers._full_items directly for speed; this fails if h11 changes.
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX-Y: Z\r\n\r\n")
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    assert event.headers._full_items == [(b"Host", b"host", b"a"), (b"X-Y", b"x-y", b"Z")]


def test_raw_head_limits() -> None:
    assert check_raw_head(b"GET / HTTP/1.1\r\n", -1, **LIMITS) is None
    assert check_raw_head(b"G" * 22, -1, **LIMITS) == (414, b"Request line too long.\n")
    assert check_raw_head(b"G" * 23 + b"\n", -1, **LIMITS) == (414, b"Request line too long.\n")
    assert check_raw_head(b"GET\r\nX: 123456789012", -1, **LIMITS)[0] == 431  # type: ignore[index]
    assert check_raw_head(b"G" * 61, -1, **LIMITS)[0] == 431  # type: ignore[index]
    head = b"GET /123456789 HTTP/1.1\r\n\r\n"
    assert check_raw_head(head, len(head), **LIMITS)[0] == 414  # type: ignore[index]
    head = b"GET / HTTP/1.1\r\nX: 1234567890\r\n\r\n"
    assert check_raw_head(head, len(head), **LIMITS)[0] == 431  # type: ignore[index]
    head = b"GET / HTTP/1.1\r\nX: 12345\r\n\r\n"
    assert check_raw_head(head, len(head), **LIMITS) is None
    assert check_raw_head(b"GET /\n\n", 7, **LIMITS) is None


def test_head_end_matches_h11s_rule() -> None:
    for raw in (b"a\r\n\r\n", b"a\n\n", b"a\n\r\n"):
        match = HEAD_END.search(raw)
        assert match is not None and match.end() == len(raw)


def parse(raw: bytes) -> RequestInfo | tuple[int, bytes]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return inspect_request(event, raw, raw.index(b"\r\n\r\n") + 4, field_count_limit=3)


def test_request_facts() -> None:
    info = parse(
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n"
    )
    assert isinstance(info, RequestInfo)
    assert (info.has_body, info.keep_alive, info.expect_continue, info.websocket) == (
        True, True, True, False,
    )  # fmt: skip
    info = parse(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\nUpgrade: WebSocket\r\n\r\n"
    )
    assert isinstance(info, RequestInfo)
    assert (info.has_body, info.keep_alive, info.websocket) == (False, False, True)
    info = parse(b"POST / HTTP/1.0\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n")
    assert isinstance(info, RequestInfo)
    assert (info.has_body, info.keep_alive, info.expect_continue) == (False, False, False)
    assert parse(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")[0] == 431  # type: ignore[index]

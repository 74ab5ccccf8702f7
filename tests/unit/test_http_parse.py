"""Request checks on top of h11, pure (the raw lines: test_http_lines.py)."""

from __future__ import annotations

import h11
import pytest

from prefork.http import _parse
from prefork.http._lines import Limits
from prefork.http._parse import CONTENT_LENGTH_DIGITS, RequestInfo, inspect_request


def test_h11_keeps_the_triples_we_read() -> None:
    # _parse reads h11's Headers._full_items directly for speed; this fails if h11 changes.
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX-Y: Z\r\n\r\n")
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    assert event.headers._full_items == [(b"Host", b"host", b"a"), (b"X-Y", b"x-y", b"Z")]


def test_h11_reads_a_content_length_of_20_digits_and_no_more() -> None:
    # fast_head leaves longer ones to h11, for its 400: this fails if h11 changes its limit.
    def length(digits: bytes) -> bytes:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n" % digits)
        event = conn.next_event()
        assert isinstance(event, h11.Request)
        return dict(event.headers)[b"content-length"]

    assert length(b"0" * (CONTENT_LENGTH_DIGITS - 1) + b"7") == b"0" * 19 + b"7"
    for digits in [b"0" * CONTENT_LENGTH_DIGITS + b"7", b"1" * 5000]:
        with pytest.raises(h11.RemoteProtocolError) as refused:
            length(digits)
        assert refused.value.error_status_hint == 400


def parse(raw: bytes) -> RequestInfo:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return inspect_request(event, raw, raw.index(b"\r\n\r\n") + 4)


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


@pytest.mark.parametrize(
    ("connection", "keep_alive"),
    [
        (b"", False),
        (b"Connection: Keep-Alive\r\n", True),
        (b"Connection: TE, keep-alive\r\n", True),
        (b"Connection: keep-alive, close\r\n", False),
        (b"Connection: close\r\n", False),
    ],
)
def test_http_10_is_kept_alive_only_when_asked(connection: bytes, keep_alive: bool) -> None:
    info = parse(b"GET / HTTP/1.0\r\nHost: a\r\n" + connection + b"\r\n")
    assert info.keep_alive is keep_alive


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    ("connection", "keep_alive", "websocket"),
    [
        (b"Connection: close\r\n", False, False),
        (b"Connection: CLOSE  \r\n", False, False),  # one token, its ends trimmed
        (b"Connection: x,close\r\n", False, False),
        (b"Connection: closed\r\n", True, False),  # a token, not a substring
        (b"Connection: keep-alive,  Upgrade \r\n", True, True),
        (b"Connection: Upgrade\r\nConnection: close\r\n", False, True),
    ],
)
def test_connection_tokens_from_either_parser(
    fast: bool, connection: bytes, keep_alive: bool, websocket: bool
) -> None:
    reader = _parse.RequestReader(Limits(line=8190, field=8190, head=65536, fields=100), fast=fast)
    reader.buf = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n" + connection + b"\r\n"
    parsed = reader.parse()
    assert parsed is not None
    info = parsed[0]
    assert (info.keep_alive, info.websocket) == (keep_alive, websocket)


def test_a_fragment_in_the_target_is_dropped() -> None:
    assert parse(b"GET /a?page=1#posts HTTP/1.1\r\nHost: a\r\n\r\n").path == b"/a?page=1"
    assert parse(b"GET /#x HTTP/1.1\r\nHost: a\r\n\r\n").path == b"/"


def test_request_facts_for_bodies() -> None:
    info = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 012\r\n\r\n")
    assert (info.has_body, info.chunked, info.content_length) == (True, False, 12)
    info = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n" % (b"9" * 20))
    assert (info.has_body, info.content_length) == (True, 10**20 - 1)
    info = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert (info.has_body, info.chunked, info.content_length) == (False, False, 0)
    info = parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert (info.has_body, info.chunked, info.content_length) == (True, True, 0)


def test_the_parser_mode_is_set_up_in_tests_that_do_not_ask_for_it(
    request: pytest.FixtureRequest,
) -> None:
    """The [h11-...] runs must really read every head with h11 (conftest.py)."""
    mode = request.node.callspec.params["http_parser"]
    assert (_parse.fast_head.__name__ == "<lambda>") == (mode == "h11")

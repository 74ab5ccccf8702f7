"""Response framing rules, pure."""

from __future__ import annotations

from typing import Any

import pytest

from prefork.http import _framing
from prefork.http._framing import CHUNKED, LENGTH, NO_BODY, UNTIL_CLOSE, HeadDefaults, build_head

NO_SERVER = HeadDefaults(server=False)
NO_DATE = HeadDefaults(date=False)
EXTRA = HeadDefaults(extra=b"x-a: 1\r\nx-b: 2\r\n")


def head(status: int = 200, headers: Any = (), **kw: Any) -> _framing.ResponseHead:
    args = {"http_11": True, "head_request": False, "keep_alive": True, "body_length": None}
    args.update(kw)
    return build_head(status, headers, **args)


@pytest.mark.parametrize(
    ("kw", "headers", "status", "mode", "has", "lacks"),
    [
        ({"body_length": 3}, (), 200, LENGTH, [b"content-length: 3"], [b"transfer-encoding"]),
        ({}, (), 200, CHUNKED, [b"transfer-encoding: chunked"], [b"content-length"]),
        ({"http_11": False}, (), 200, UNTIL_CLOSE, [b"connection: close"], [b"chunked"]),
        ({}, [(b"content-length", b"7")], 200, LENGTH, [b"content-length: 7"], [b"chunked"]),
        ({}, [(b"transfer-encoding", b"gzip")], 200, CHUNKED, [b"chunked"], [b"gzip"]),
        ({}, (), 204, NO_BODY, [], [b"content-length", b"transfer-encoding"]),
        ({}, [(b"Content-Length", b"5")], 204, NO_BODY, [], [b"content-length", b"chunked"]),
        ({"body_length": 5}, [(b"content-length", b"5")], 204, NO_BODY, [], [b"length"]),
        ({}, [(b"transfer-encoding", b"chunked")], 204, NO_BODY, [], [b"transfer-encoding"]),
        ({}, [(b"content-length", b"5")], 304, NO_BODY, [b"content-length: 5"], [b"chunked"]),
        ({}, [(b"transfer-encoding", b"chunked")], 304, NO_BODY, [], [b"transfer-encoding"]),
        (
            {"head_request": True},
            [(b"content-length", b"9"), (b"transfer-encoding", b"chunked")],
            200,
            NO_BODY,
            [b"content-length: 9"],
            [b"transfer-encoding"],
        ),
        ({"head_request": True}, [(b"content-length", b"9")], 204, NO_BODY, [], [b"length"]),
        ({"body_length": 0}, (), 304, NO_BODY, [], [b"content-length"]),
        ({"head_request": True, "body_length": 5}, (), 200, NO_BODY, [b"content-length: 5"], []),
        ({"head_request": True}, (), 200, NO_BODY, [b"transfer-encoding: chunked"], []),
        ({"keep_alive": False, "body_length": 0}, (), 200, LENGTH, [b"connection: close"], []),
        ({"defaults": NO_SERVER, "body_length": 0}, (), 200, LENGTH, [b"date: "], [b"server:"]),
        ({"defaults": NO_DATE, "body_length": 0}, (), 200, LENGTH, [b"server: "], [b"date:"]),
        ({"defaults": EXTRA, "body_length": 0}, (), 200, LENGTH, [b"x-a: 1\r\nx-b: 2\r\n"], []),
        ({"body_length": 0}, [(b"date", b"x")], 200, LENGTH, [b"date: x\r\n"], [b"GMT"]),
        ({"body_length": 0}, [(b"Server", b"me")], 404, LENGTH, [b"server: me"], [b"prefork"]),
        ({"body_length": 0}, [(b"connection", b"keep-alive")], 200, LENGTH, [], [b"connection"]),
        # HTTP/1.0 keep-alive (the client asked): said when the length is known, else close
        ({"http_11": False, "body_length": 2}, (), 200, LENGTH, [b"connection: keep-alive"], []),
        ({"http_11": False}, [(b"content-length", b"2")], 200, LENGTH, [b"keep-alive"], []),
        ({"http_11": False}, (), 304, NO_BODY, [b"connection: keep-alive"], [b"close"]),
        ({"http_11": False, "head_request": True}, (), 200, NO_BODY, [b"close"], [b"keep"]),
        (
            {"http_11": False, "keep_alive": False, "body_length": 2},
            (),
            200,
            LENGTH,
            [b"close"],
            [],
        ),
    ],
)
def test_framing_decisions(
    kw: dict[str, Any], headers: Any, status: int, mode: int, has: list[bytes], lacks: list[bytes]
) -> None:
    h = head(status, headers, **kw)
    assert h.mode == mode
    assert h.head.startswith(_framing.status_line(status)) and h.head.endswith(b"\r\n\r\n")
    for piece in has:
        assert piece in h.head
    for piece in lacks:
        assert piece not in h.head


def test_status_lines_cache_and_unknown_codes() -> None:
    assert _framing.status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert _framing.status_line(200) is _framing.status_line(200)
    assert _framing.status_line(599) == b"HTTP/1.1 599 \r\n"


def test_date_is_formatted_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.2]
    monkeypatch.setattr(_framing.time, "time", lambda: now[0])
    first = _framing.date_header()
    assert first == b"date: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
    now[0] += 0.5
    assert _framing.date_header() is first
    now[0] += 1
    assert _framing.date_header() == b"date: Tue, 14 Nov 2023 22:13:21 GMT\r\n"


def test_chunks() -> None:
    assert _framing.chunk(b"") == b""
    assert _framing.chunk(b"a" * 26) == b"1a\r\n" + b"a" * 26 + b"\r\n"


def test_simple_response_is_complete() -> None:
    r = _framing.simple_response(400, b"bad\n")
    assert r.startswith(b"HTTP/1.1 400 Bad Request\r\n") and r.endswith(b"\r\n\r\nbad\n")
    assert b"content-length: 4\r\n" in r and b"connection: close" in r
    head = _framing.simple_response(400, b"bad\n", head_request=True)
    assert head == r[: -len(b"bad\n")]  # to HEAD: the same head, no body


def test_app_headers_are_checked_once_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefork.http import _framing

    monkeypatch.setattr(_framing, "_FIELD_LINES", {})
    monkeypatch.setattr(_framing, "_MAX_FIELD_LINES", 2)

    def head(headers: list[tuple[Any, Any]]) -> bytes:
        return _framing.build_head(
            200, headers, http_11=True, head_request=False, keep_alive=True, body_length=0
        ).head

    assert b"x-a: 1\r\nx-b: 2\r\n" in head([(b"X-A", b"1"), ("x-b", "2")])
    assert list(_framing._FIELD_LINES) == [(b"X-A", b"1"), ("x-b", "2")]
    with pytest.raises(TypeError, match="must be bytes, got bytearray"):
        head([(b"x-c", bytearray(b"3"))])  # unhashable: refused, as before
    assert head([(b"X-A", b"1"), (b"x-d", b"4")]).count(b"\r\nx-") == 2  # full: not kept
    assert len(_framing._FIELD_LINES) == 2
    with pytest.raises(ValueError, match="two content-length"):
        head([(b"content-length", b"0"), (b"content-length", b"0")])

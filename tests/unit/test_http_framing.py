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


# -- framed_head: build_head remembered for the rest of the second ---------------------------


def framed(status: Any = 200, headers: Any = (), reason: bytes | None = None) -> Any:
    return _framing.framed_head(status, headers, True, False, True, _framing.DEFAULTS, 5, reason)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """``time.time()`` of ``_framing``, set by the test; no head remembered from before."""
    now = [1_000_000.0]
    monkeypatch.setattr(_framing.time, "time", lambda: now[0])
    _framing._HEADS.clear()
    return now


def test_framed_head_is_build_heads_and_remembered_within_the_second(clock: list[float]) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    first = framed(200, headers)
    expected = head(200, headers, body_length=5)
    assert (first.head, first.mode, first.content_length) == (
        expected.head,
        expected.mode,
        expected.content_length,
    )
    assert framed(200, list(headers)) is first  # an equal list: the same head
    assert framed(200, iter(headers)) is first  # any iterable, read once
    assert framed(201, headers) is not first
    clock[0] += 0.5
    assert framed(200, headers) is first
    clock[0] += 0.5  # the next second: a new date line
    again = framed(200, headers)
    assert again is not first and again.head != first.head  # Date: ... 46:40 then 46:41


def test_framed_head_takes_the_headers_as_they_are_now(clock: list[float]) -> None:
    """An app that changes its headers list between responses gets the new head."""
    headers = [(b"x-a", b"1")]
    one = framed(200, headers)
    headers[0] = (b"x-a", b"2")
    assert b"x-a: 2\r\n" in framed(200, headers).head and b"x-a: 1\r\n" in one.head


def test_framed_head_builds_unhashable_headers_each_time(clock: list[float]) -> None:
    inner = [b"x-a", b"1"]
    first = framed(200, [inner])
    assert b"x-a: 1\r\n" in first.head and not _framing._HEADS
    inner[1] = b"2"  # a remembered head would have kept the old value
    assert b"x-a: 2\r\n" in framed(200, [inner]).head
    with pytest.raises(TypeError):
        framed(200, [(b"x-a", bytearray(b"3"))])  # bytearray is not a value build_head takes


def test_framed_head_refuses_a_status_that_only_equals_an_int(clock: list[float]) -> None:
    framed(200)
    with pytest.raises(ValueError, match="int"):
        framed(200.0)  # equal to 200 as a key: never answered from the memo
    with pytest.raises(ValueError, match="int"):
        framed(True)  # type: ignore[arg-type]
    assert len(_framing._HEADS) == 1


def test_framed_head_keeps_reason_and_name_case_apart(clock: list[float]) -> None:
    plain = framed(200, [(b"X-A", b"1")])
    wsgi = framed(200, [(b"X-A", b"1")], reason=b"OK")
    assert b"x-a: 1\r\n" in plain.head and b"X-A: 1\r\n" in wsgi.head


def test_framed_head_errors_are_not_remembered(clock: list[float]) -> None:
    with pytest.raises(ValueError, match="invalid response header name"):
        framed(200, [(b"bad name", b"1")])
    assert not _framing._HEADS


def test_framed_head_keeps_at_most_max_heads(clock: list[float]) -> None:
    """An app whose bodies vary in length makes a head per length: the memo is bounded."""
    for length in range(3 * _framing.MAX_HEADS):
        framed(200, [(b"content-length", b"%d" % length)])
        assert len(_framing._HEADS) <= _framing.MAX_HEADS
    last = [(b"content-length", b"%d" % (3 * _framing.MAX_HEADS - 1))]
    assert len(_framing._HEADS) == _framing.MAX_HEADS and framed(200, last) is framed(200, last)

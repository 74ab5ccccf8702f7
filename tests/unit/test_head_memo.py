"""The worker's memo of request heads (``_parse.MEMO_HEADS``): a head read before is not
parsed again, and sharing its ``RequestInfo`` changes nothing an app or a client sees. The
fast path's own (not run once per parser as the test_http modules are)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from _http_fakes import Harness, run

from prefork.http import _parse
from prefork.http._lines import Limits, Refused
from prefork.http._parse import MEMO_HEAD_BYTES, MEMO_HEADS, RequestInfo, RequestReader

LIMITS = Limits(line=8190, field=8190, head=65536, fields=100)
HEAD = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The heads ``fast_head`` was asked to read."""
    heads: list[bytes] = []
    fast_head = _parse.fast_head

    def counted(buf: bytes | bytearray, end: int, max_fields: int) -> Any:
        heads.append(bytes(buf[:end]))
        return fast_head(buf, end, max_fields)

    monkeypatch.setattr(_parse, "fast_head", counted)
    return heads


def read(reader: RequestReader, data: bytes | bytearray) -> RequestInfo:
    reader.buf = data
    result = reader.parse()
    assert result is not None
    info, parser = result
    assert parser is None
    return info


def test_a_head_read_again_is_not_parsed_again(parsed: list[bytes]) -> None:
    memo: dict[bytes, RequestInfo] = {}
    first = read(RequestReader(LIMITS, memo=memo), HEAD)
    again = read(RequestReader(LIMITS, memo=memo), HEAD)  # another connection of the worker
    assert again is first and parsed == [HEAD] and list(memo) == [HEAD]
    pipelined = read(RequestReader(LIMITS, memo=memo), HEAD + b"GET /next")  # no copy kept
    assert pipelined is first and parsed == [HEAD]
    other = read(RequestReader(LIMITS, memo=memo), HEAD.replace(b"/a", b"/c"))
    assert other.path == b"/c?b=1" and len(parsed) == 2


def test_what_the_memo_leaves_alone(parsed: list[bytes]) -> None:
    memo: dict[bytes, RequestInfo] = {}
    # A head from several reads (a bytearray): read, not remembered.
    assert read(RequestReader(LIMITS, memo=memo), bytearray(HEAD)).path == b"/a?b=1"
    # A head over MEMO_HEAD_BYTES: read, not remembered.
    long_head = HEAD.replace(b"*/*", b"x" * MEMO_HEAD_BYTES)
    read(RequestReader(LIMITS, memo=memo), long_head)
    read(RequestReader(LIMITS, memo=memo), long_head)
    assert memo == {} and len(parsed) == 3
    # A refused head is refused every time.
    for _ in range(2):
        with pytest.raises(Refused) as refused:
            read(RequestReader(LIMITS, memo=memo), b"CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\n\r\n")
        assert refused.value.status == 501
    assert memo == {}
    # ``--http h11``: h11 reads every head, nothing is remembered.
    read(RequestReader(LIMITS, fast=False, memo=memo), HEAD)
    assert memo == {}


def test_the_memo_holds_at_most_memo_heads() -> None:
    memo: dict[bytes, RequestInfo] = {}
    reader = RequestReader(LIMITS, memo=memo)
    sizes = []
    for n in range(3 * MEMO_HEADS):
        read(reader, HEAD.replace(b"/a", b"/%d" % n))
        sizes.append(len(memo))
    assert max(sizes) == MEMO_HEADS and sizes[MEMO_HEADS] == 1  # full: emptied, then refilled


def test_a_reader_of_other_limits_has_a_memo_of_its_own() -> None:
    """A memo belongs to one set of limits (a worker's): a head one allows, a stricter
    reader still refuses."""
    read(RequestReader(LIMITS), HEAD)
    with pytest.raises(Refused) as refused:
        read(RequestReader(Limits(line=8190, field=8190, head=65536, fields=1)), HEAD)
    assert refused.value.status == 431


def test_apps_get_a_header_list_of_their_own() -> None:
    """The scope's header list is the app's to change (Starlette's MutableHeaders does, in
    place): a memo's RequestInfo shared by two requests must not carry one app's changes to
    the next."""
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(list(scope["headers"]))
        scope["headers"].append((b"x-added", b"1"))
        scope["headers"][0] = (b"host", b"changed")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> Harness:
        h = Harness(app)
        for _ in range(3):
            h.feed(HEAD)
            await h.settle()
        return h

    h = run(main())
    assert seen == [[(b"host", b"x"), (b"accept", b"*/*")]] * 3
    assert len(h.state.heads) == 1 and h.out.count(b"HTTP/1.1 200 ") == 3


def test_a_full_memo_of_the_worst_heads_holds_under_a_mebibyte() -> None:
    """The worst heads to remember: up to ``MEMO_HEAD_BYTES`` each, as many fields as the
    limit lets the fast path take (each field a tuple of two bytes objects), all different."""

    def worst(n: int) -> bytes:
        fields = [b"Host: h"] + [b"a%d:b" % i for i in range(LIMITS.fields - 1)]
        head = b"GET /%d HTTP/1.1\r\n%s\r\n\r\n" % (n, b"\r\n".join(fields))
        return head

    assert len(worst(10**6)) <= MEMO_HEAD_BYTES
    reader = RequestReader(LIMITS)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(3 * MEMO_HEADS):
            read(reader, worst(10**6 + n))  # each head a new bytes object, kept as its key
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0 < len(reader._memo) <= MEMO_HEADS
    assert held < 1024 * 1024

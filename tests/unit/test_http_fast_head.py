"""The fast head parser against h11, the reference: on every head the fast path takes, both
read the same method, target, version and headers; every head h11 refuses, the fast path
declines (so h11 refuses it). Heads are generated from pieces that sit on the edges of the
grammar: case, spacing and tabs around values, obs-text, empty values, odd targets and
methods, repeated, malformed or long (over 20 digits) Content-Length, Transfer-Encoding and
Host.

Derandomized and bounded like ``test_http_fuzz.py`` (``PREFORK_FUZZ_EXAMPLES`` explores).
"""

from __future__ import annotations

import os
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefork.http._lines import Limits, Refused
from prefork.http._parse import RequestReader, fast_head

EXPLORE = os.environ.get("PREFORK_FUZZ_EXAMPLES")
EXAMPLES = int(EXPLORE or "400")
LIMITS = Limits(line=8190, field=8190, head=65536, fields=100)
SMALL = Limits(line=40, field=30, head=120, fields=2)

METHODS = [b"GET", b"POST", b"HEAD", b"OPTIONS", b"CONNECT", b"get", b"M-SEARCH", b"G{T", b""]
TARGETS = [b"/", b"/a?b=c", b"*", b"http://h/x", b"/%7e\x80", b"/a b", b"", b"//", b"/\x7f"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.10", b"http/1.1", b"HTTP/1.1 "]
NAMES = [
    b"Host",
    b"host",
    b"HOST",
    b"Content-Length",
    b"Transfer-Encoding",
    b"X-A",
    b"x_b",
    b"Connection",
    b"Expect",
    b"Upgrade",
    b"Bad Name",
    b"",
    b"X\x80",
    b"a:b",
]
PLAIN_NAMES = [b"X-A", b"x_b", b"Connection", b"Expect", b"Upgrade", b"Content-Length", b"Accept"]
VALUES = [
    b"",
    b"v",
    b" v",
    b"v ",
    b"\tv\t",
    b"a  b",
    b"a\tb",
    b"\x80\xff",
    b"5",
    b"05",
    b"5, 5",
    b"-1",
    b"0" * 19 + b"5",  # 20 digits: as many as h11 reads
    b"9" * 20,
    b"0" * 20 + b"5",  # 21 and more: h11 refuses them
    b"0" * 29 + b"5",
    b"1" * 21,
    b"0" * 4999 + b"5",  # int() raises past 4,300 digits
    b"1" * 5000,
    b"chunked",
    b"Chunked",
    b"gzip, chunked",
    b"close",
    b"100-continue",
    b"websocket",
    b"x" * 30,
]
#: Values that make a line unclean: ``_lines`` refuses them (400); h11 would read some.
UNCLEAN = [
    b"a\nb",  # a bare LF
    b"a\nX-B: c",  # a bare LF that starts what looks like a field line
    b"a\rb",  # a bare CR
    b"a\r",
    b"a\x00b",
    b"a\x7f",
    b"a\x1b[0m",
    b"a\r\n b",  # obs-fold
    b"a\r\n\tb",
]


def _head(method: bytes, sep: bytes, target: bytes, version: bytes, fields: list[Any]) -> bytes:
    lines = b"".join(name + colon + value + b"\r\n" for name, colon, value in fields)
    return method + sep + target + b" " + version + b"\r\n" + lines + b"\r\n"


def head_strategy() -> st.SearchStrategy[bytes]:
    """Half wild heads, half heads near what clients send (one Host, plain pieces) with a
    value from the edges: the fast path takes many of those."""
    wild_field = st.tuples(
        st.sampled_from(NAMES),
        st.sampled_from([b":", b" :", b"::"]),
        st.sampled_from(VALUES + UNCLEAN),
    )
    wild = st.builds(
        _head,
        st.sampled_from(METHODS),
        st.sampled_from([b" ", b" ", b" ", b"  ", b"\t"]),
        st.sampled_from(TARGETS),
        st.sampled_from(VERSIONS),
        st.lists(wild_field, max_size=6),
    )
    field = st.tuples(
        st.sampled_from(PLAIN_NAMES), st.just(b":"), st.sampled_from(VALUES + UNCLEAN)
    )
    host = st.tuples(st.sampled_from([b"Host", b"host"]), st.just(b":"), st.sampled_from(VALUES))
    near = st.builds(
        lambda method, target, version, fields, host, at: _head(
            method, b" ", target, version, [*fields[:at], host, *fields[at:]]
        ),
        st.sampled_from(METHODS[:6]),
        st.sampled_from(TARGETS[:5]),
        st.sampled_from(VERSIONS[:2]),
        st.lists(field, max_size=5),
        host,
        st.integers(0, 5),
    )
    return st.one_of(wild, near)


def h11_reads(head: bytes) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]] | None:
    """What h11 parses from ``head``, or None if it refuses it."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    assert isinstance(event, h11.Request)
    headers = [(name, value) for _, name, value in event.headers._full_items]
    return event.method, event.target, event.http_version, headers


def verdict(head: bytes, fast: bool, limits: Limits = LIMITS) -> object:
    """What the reader makes of ``head``: its facts, or the refusal."""
    reader = RequestReader(limits, fast=fast)
    reader.buf = head
    try:
        parsed = reader.parse()
    except Refused as exc:
        return ("refused", exc.status)
    assert parsed is not None
    info = parsed[0]
    return tuple(getattr(info, name) for name in info.__slots__)


@settings(
    max_examples=EXAMPLES,
    derandomize=EXPLORE is None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(head_strategy())
def test_the_fast_path_reads_what_h11_reads_or_declines(head: bytes) -> None:
    ours = fast_head(head, len(head), LIMITS.fields)
    if ours is not None:
        assert ours == h11_reads(head)
    assert verdict(head, fast=True) == verdict(head, fast=False)
    # Limits a generated head reaches: too many fields, a line or a head too long.
    assert verdict(head, True, SMALL) == verdict(head, False, SMALL)


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "h11 lowercases TE"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "h11 merges them",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", "h11 merges them"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", "h11 refuses it"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: " + b"0" * 20 + b"5\r\n\r\n",
            "h11 refuses more than 20 digits",
        ),
        (b"GET / HTTP/1.1\r\n\r\n", "h11 refuses a 1.1 request with no Host"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "h11 refuses two Hosts"),
        (b"GET / HTTP/1.0\r\n\r\n", "declined: h11 reads a Host-less 1.0 head"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "h11 parses it, 505 follows"),
    ],
)
def test_heads_the_fast_path_leaves_to_h11(head: bytes, why: str) -> None:
    assert fast_head(head, len(head), LIMITS.fields) is None, why


def test_a_head_from_several_reads_gives_bytes() -> None:
    head = bytearray(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Y:  z \r\n\r\nnext")
    parsed = fast_head(head, len(head) - 4, LIMITS.fields)
    assert parsed == (b"GET", b"/x", b"1.1", [(b"host", b"a"), (b"x-y", b"z")])
    assert all(type(part) is bytes for part in parsed[:3])
    assert all(type(n) is bytes and type(v) is bytes for n, v in parsed[3])


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: a\nX-B: c\r\n\r\n",  # the bare LF hides a line
        b"GET / HTTP/1.1\r\nHost: a\r\nX-B: c\rd\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-B: c\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-B: c\r\n d\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-B: c\r\n\td\r\n\r\n",
    ],
)
def test_an_unclean_line_is_refused_not_read(head: bytes) -> None:
    """The fast path checks the lines itself (no ``quick_head_end`` before it): a head with a
    bare LF or CR, a control byte or obs-fold is never read; ``_lines`` refuses it."""
    assert fast_head(head, len(head), LIMITS.fields) is None
    assert verdict(head, fast=True) == ("refused", 400)


def test_more_fields_than_the_limit_are_left_to_the_line_checks() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: 2\r\n\r\n"
    assert fast_head(head, len(head), 3) is not None
    assert fast_head(head, len(head), 2) is None
    assert verdict(head, True, SMALL) == ("refused", 431)

"""Fuzzing HTTPProtocol (hypothesis): request bytes, and how they are split across writes.

For every input: the bytes written are whole responses, any 4xx comes last and the connection
is closed once the client's FIN came (a response, a 4xx and a close, or a close); nothing
crashes or logs an error; and the outcome is the same as when the whole input comes in one
write, byte for byte (Date aside), unless the input asks for ``Expect: 100-continue`` (an
interim answer depends on when the body comes; the final answers still match).

Bounded to fit the suite's time budget, and derandomized (the same examples every run).
``PREFORK_FUZZ_EXAMPLES=5000 pytest tests/unit/test_http_fuzz.py`` explores further, with new
random examples each run.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
from typing import Any

from _http_fakes import Harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXPLORE = os.environ.get("PREFORK_FUZZ_EXAMPLES")
EXAMPLES = int(EXPLORE or "150")
#: Small limits, so that inputs of a few hundred bytes reach every one of them.
LIMITS = {
    "limit_request_line": 40,
    "limit_request_field_size": 40,
    "limit_request_head": 256,
    "limit_request_fields": 6,
    "limit_request_body": 64,
}
STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")
DATE = re.compile(rb"date: [^\r]*\r\n")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, then answers with what it got (never the raw bytes back)."""
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message["body"])
        if not message["more_body"]:
            break
    body = b"%s %s %d" % (scope["method"].encode(), scope["raw_path"], size)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


METHODS = [b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS"]
TARGETS = [b"/", b"/a?b=1", b"http://h/x", b"/%41", b"/" + b"p" * 30]
FIELDS = [
    b"X-A: a\tb \x80\xff",
    b"X-Long: " + b"v" * 30,
    b"Expect: 100-continue",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Accept: */*",
]
#: What a mutation inserts: control bytes, line ends, whitespace, framing, or a whole field.
INSERTS = [
    b"\x00", b"\x01", b"\x7f", b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"\r\n ", b"\r\n\t",
    b"\r\nContent-Length: 3", b"\r\nTransfer-Encoding: chunked", b"\r\nX: " + b"y" * 40,
    b"\r\nTransfer-Encoding: gzip", b"\r\nUpgrade: websocket\r\nConnection: upgrade",
    b"0\r\nT: 1\r\n", b"CONNECT", b"HTTP/2.0",
]  # fmt: skip


@st.composite
def chunked(draw: st.DrawFn) -> bytes:
    """A well-formed chunked body, maybe with extensions and trailers."""
    out = b""
    for data in draw(st.lists(st.binary(min_size=1, max_size=30), max_size=3)):
        out += b"%x%s\r\n%s\r\n" % (len(data), draw(st.sampled_from([b"", b";a=b"])), data)
    trailers = draw(st.lists(st.sampled_from([b"T: 1", b"T-Long: " + b"t" * 30]), max_size=8))
    return out + b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"


@st.composite
def request(draw: st.DrawFn) -> bytes:
    """A well-formed request (its body framed as its head says), then 0 to 2 mutations."""
    line = b"%s %s %s" % (
        draw(st.sampled_from(METHODS)),
        draw(st.sampled_from(TARGETS)),
        draw(st.sampled_from([b"HTTP/1.1"] * 5 + [b"HTTP/1.0"])),
    )
    fields = [b"Host: t", *draw(st.lists(st.sampled_from(FIELDS), max_size=4))]
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b""
    if framing == "length":
        body = draw(st.binary(max_size=80))
        fields.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        body = draw(chunked())
        fields.append(b"Transfer-Encoding: chunked")
    raw = b"".join(x + b"\r\n" for x in [line, *fields, b""]) + body
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        at = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(["insert", "delete", "cut"]))
        if kind == "insert":
            raw = raw[:at] + draw(st.sampled_from(INSERTS)) + raw[at:]
        elif kind == "delete":
            raw = raw[:at] + raw[at + draw(st.integers(1, 4)) :]
        else:
            raw = raw[:at]
    return raw


INPUT = st.one_of(
    st.lists(request(), min_size=1, max_size=4).map(b"".join),
    st.builds(lambda a, b: a + b, request(), st.binary(max_size=30)),
    st.binary(max_size=120),
)


async def serve(raw: bytes, cuts: list[int], yields: bool) -> tuple[bytes, bool, list[Any]]:
    """Feed ``raw`` cut at ``cuts`` (letting the app run between writes if ``yields``), then
    a FIN; return what was written (Date removed), whether it closed, and loop errors."""
    h = Harness(app, LIMITS)
    errors: list[Any] = []
    h.loop.set_exception_handler(lambda loop, context: errors.append(context))
    bounds = [0, *cuts, len(raw)]
    for start, end in itertools.pairwise(bounds):
        if h.transport.closed:
            break
        h.proto.data_received(raw[start:end])
        if yields:
            await asyncio.sleep(0)
    if not h.transport.closed:
        h.eof()
    await h.settle()
    return DATE.sub(b"", h.out), h.transport.closed, errors


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXPLORE is None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=INPUT, data=st.data())
def test_any_input_however_split_gets_the_same_answers_and_a_close(
    raw: bytes, data: st.DataObject
) -> None:
    if len(raw) > 1 and data.draw(st.booleans(), "byte by byte"):
        cuts = list(range(1, len(raw)))
    else:
        positions = st.integers(1, max(1, len(raw) - 1))
        cuts = sorted(set(data.draw(st.lists(positions, max_size=12), "cuts")) - {len(raw)})
    yields = data.draw(st.booleans(), "the app runs between writes")
    handler = Errors()
    logger = logging.getLogger("prefork.http")
    logger.addHandler(handler)
    try:
        split_out, split_closed, split_errors = asyncio.run(serve(raw, cuts, yields))
        whole_out, whole_closed, whole_errors = asyncio.run(serve(raw, [], False))
    finally:
        logger.removeHandler(handler)
    assert split_errors == whole_errors == [] and handler.records == []
    assert split_closed and whole_closed
    statuses = [int(s) for s in STATUS.findall(split_out)]
    assert all(s < 400 for s in statuses[:-1]) and 500 not in statuses
    if b"100-continue" in raw.lower():
        assert [s for s in statuses if s != 100] == [
            int(s) for s in STATUS.findall(whole_out) if s != b"100"
        ]
    else:
        assert split_out == whole_out

"""ResponseParser: every framing, fed whole, byte by byte and split at every point."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefork.load._response import (
    MAX_BODY,
    MAX_CHUNK_LINE,
    MAX_ECHO,
    MAX_HEAD,
    Parsed,
    ResponseParser,
)

HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: t\r\n\r\nhello"
HELLO_HEADERS = (("Content-Length", "5"), ("Server", "t"))
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value;flag\r\nhello\r\n"
    b"7 \t; ext\r\n, world\r\n"
    b"0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n"
)


def feed_all(chunks: list[bytes], eof: bool, **options: bool) -> list[Parsed]:
    parser = ResponseParser(**options)
    out: list[Parsed] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    if eof:
        out += parser.feed_eof()
    return out


def parse(message: bytes, eof: bool = False, **options: bool) -> list[Parsed]:
    """The responses in ``message``, checked to be the same however it is split."""
    whole = feed_all([message], eof, **options)
    assert feed_all([message[i : i + 1] for i in range(len(message))], eof, **options) == whole
    for i in range(len(message) + 1):
        assert feed_all([message[:i], message[i:]], eof, **options) == whole, i
    return whole


def refused(message: bytes, match: str, eof: bool = False, **options: bool) -> None:
    """``message`` raises ValueError whole and byte by byte."""
    for chunks in ([message], [message[i : i + 1] for i in range(len(message))]):
        with pytest.raises(ValueError, match=match):
            feed_all(chunks, eof, **options)


def test_a_content_length_response() -> None:
    assert parse(HELLO) == [(200, len(HELLO), True, HELLO_HEADERS, b"")]
    assert parse(HELLO, keep=True) == [(200, len(HELLO), True, HELLO_HEADERS, b"hello")]


def test_pipelined_responses_in_one_read_each_framing() -> None:
    empty = b"HTTP/1.1 204 No Content\r\n\r\n"
    message = HELLO + CHUNKED + empty + HELLO
    out = parse(message, keep=True)
    assert [(s, n, k, b) for s, n, k, _, b in out] == [
        (200, len(HELLO), True, b"hello"),
        (200, len(CHUNKED), True, b"hello, world"),
        (204, len(empty), True, b""),
        (200, len(HELLO), True, b"hello"),
    ]
    assert sum(n for _, n, _, _, _ in parse(message)) == len(message)


def test_chunked_with_extensions_and_trailers() -> None:
    headers = (("Transfer-Encoding", "chunked"),)
    assert parse(CHUNKED) == [(200, len(CHUNKED), True, headers, b"")]
    assert parse(CHUNKED, keep=True) == [(200, len(CHUNKED), True, headers, b"hello, world")]
    no_trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    assert parse(no_trailers)[0][:3] == (200, len(no_trailers), True)


def test_a_body_that_runs_until_the_close() -> None:
    message = b"HTTP/1.1 200 OK\r\nServer: t\r\n\r\nall of this"
    assert parse(message) == []
    assert parse(message, eof=True, keep=True) == [
        (200, len(message), False, (("Server", "t"),), b"all of this")
    ]
    gzip = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\nabc"
    assert parse(gzip, eof=True, keep=True)[0][1:3] == (len(gzip), False)
    assert ResponseParser().feed_eof() == []  # closed between responses: nothing to say


def test_transfer_encoding_wins_over_content_length() -> None:
    message = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert parse(message)[0][:3] == (200, len(message), True)


def test_keep_alive_by_version_and_connection() -> None:
    def keep_alive(head: bytes) -> bool:
        return parse(head + b"Content-Length: 2\r\n\r\nhi")[0][2]

    assert keep_alive(b"HTTP/1.1 200 OK\r\n")
    assert keep_alive(b"HTTP/1.1 200 OK\r\nConnection: Upgrade, Keep-Alive\r\n")
    assert not keep_alive(b"HTTP/1.1 200 OK\r\nConnection: x, Close\r\n")
    assert not keep_alive(b"HTTP/1.0 200 OK\r\n")
    assert keep_alive(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n")
    assert not keep_alive(b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\n")


def test_after_a_closing_response_the_rest_is_ignored() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
    assert parse(closing + HELLO) == [(200, len(closing), False, parse(closing)[0][3], b"")]
    parser = ResponseParser()
    parser.feed(closing)
    assert parser.feed(b"garbage") == []
    assert parser.feed_eof() == []


def test_no_body_after_head_204_304() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    assert parse(head + HELLO, head_request=True)[0][:3] == (200, len(head), True)
    assert len(parse(head + HELLO, head_request=True)) == 2
    for status in (b"204 No Content", b"304 Not Modified"):
        message = b"HTTP/1.1 " + status + b"\r\n\r\n"
        assert parse(message + HELLO)[0][:3] == (int(status[:3]), len(message), True)
    chunked_head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert parse(chunked_head, head_request=True)[0][:3] == (200, len(chunked_head), True)


def test_interim_responses_are_skipped_their_bytes_counted() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    out = parse(interim + HELLO, keep=True)
    assert out == [(200, len(interim) + len(HELLO), True, HELLO_HEADERS, b"hello")]


def test_101_ends_http_on_the_connection() -> None:
    switch = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    out = parse(switch + b"\x81\x05hello")
    assert [r[:3] for r in out] == [(101, len(switch), False)]


def test_status_line_without_reason_and_equal_repeated_lengths() -> None:
    message = b"HTTP/1.1 404\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\nno"
    assert parse(message)[0][:3] == (404, len(message), True)


def test_long_heads_parse_as_short_ones() -> None:
    cookie = "a" * 3000  # over the size of the heads whose facts are cached
    message = b"HTTP/1.1 200 OK\r\nSet-Cookie: %s\r\nContent-Length: 2\r\n\r\nhi" % cookie.encode()
    headers = (("Set-Cookie", cookie), ("Content-Length", "2"))
    assert parse(message, keep=True) == [(200, len(message), True, headers, b"hi")]


def test_the_head_request_flag_can_change_between_responses() -> None:
    parser = ResponseParser(head_request=True)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    assert parser.feed(head)[0][:2] == (200, len(head))
    parser.head_request = False
    assert parser.feed(HELLO)[0][:2] == (200, len(HELLO))


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "malformed status line b'HTTP/2 200 OK'"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", "malformed header line b'No colon here'"),
        (b"HTTP/1.1 200 OK\r\nName : v\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", "malformed header line b' folded'"),
        (b"HTTP/1.1 200 OK\r\nA: b\nC: d\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", r"bad Content-Length b'1, 2'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n", "malformed chunk-size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n", "malformed chunk-size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", "malformed chunk-size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", "not followed by"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad\r\n\r\n", "header line"),
    ],
)
def test_malformed_responses(message: bytes, match: str) -> None:
    refused(message, match)


def test_limits() -> None:
    head = b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n"
    with pytest.raises(ValueError, match="response head over 65536 bytes"):
        ResponseParser().feed(head)  # whole: its end is found, too far
    parser = ResponseParser()
    with pytest.raises(ValueError, match="response head over 65536 bytes"):
        for i in range(0, len(head), 1000):
            parser.feed(head[i : i + 1000])  # in pieces: refused before its end comes
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    line = b"1;" + b"x" * MAX_CHUNK_LINE
    with pytest.raises(ValueError, match="malformed chunk-size line"):
        ResponseParser().feed(chunked + line + b"\r\n")
    with pytest.raises(ValueError, match="chunk-size line over 4096 bytes"):
        ResponseParser().feed(chunked + line)
    trailers = chunked + b"0\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n"
    with pytest.raises(ValueError, match="trailer section over 65536 bytes"):
        ResponseParser().feed(trailers)
    with pytest.raises(ValueError, match="trailer section over 65536 bytes"):
        ResponseParser().feed(trailers[:-4])


def test_kept_bodies_are_bounded() -> None:
    big = MAX_BODY + 1
    length = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big
    with pytest.raises(ValueError, match=r"response body over 16777216 bytes \(Content-Length\)"):
        ResponseParser(keep=True).feed(length)  # refused before it comes
    assert ResponseParser().feed(length + b"a" * big)[0][1] == len(length) + big  # counted only
    parser = ResponseParser(keep=True)
    at_most = parser.feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % MAX_BODY + b"a" * MAX_BODY
    )
    assert at_most[0][4] == b"a" * MAX_BODY
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % big
    with pytest.raises(ValueError, match="response body over"):
        ResponseParser(keep=True).feed(chunked + b"a" * big)
    until_eof = b"HTTP/1.1 200 OK\r\n\r\n" + b"a" * big
    with pytest.raises(ValueError, match="response body over"):
        ResponseParser(keep=True).feed(until_eof)


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Le", "closed waiting for a head"),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "closed waiting for a head"),
        (HELLO[:-1], "closed in a Content-Length body"),
        (CHUNKED[:60], "closed waiting for a chunk-size line"),
        (CHUNKED[:70], "closed in a chunk's data"),
        (CHUNKED[:72], "closed waiting for the CRLF after a chunk"),
        (CHUNKED[:-1], "closed waiting for the trailer section"),
    ],
)
def test_a_close_in_the_middle_of_a_response(message: bytes, match: str) -> None:
    refused(message, match, eof=True)


# The echo (a read equal to the last one-response read is that response again) against the
# full parser: a reference parser forgets its echo before every read.

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 15:32:43 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
)
# Well-formed and hostile: each may come as a read of its own, again and again.
ECHO_CORPUS = [
    HELLO,
    NGINX,
    NGINX.replace(b"43 GMT", b"44 GMT"),  # the next second's Date
    HELLO + HELLO,  # two responses to one request
    b"HTTP/1.1 100 Continue\r\n\r\n" + HELLO,  # an interim response, then the answer
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",  # a HEAD's answer, or a body to come
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",  # closes the connection
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    CHUNKED,
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nhello",  # bad Content-Length
    b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n",  # a head over the limit
    b"HTTP/1.1 200 OK\r\n\r\nuntil the close",
    HELLO[:20],
    HELLO[20:],
    b"hello",
    b"garbage\r\n\r\n",
]


def outcome(parser: ResponseParser, reads: list[tuple[bytes, bool]], forget: bool) -> list[object]:
    """What each read gives (its responses, or its error), then the close's."""
    out: list[object] = []
    for data, head_request in reads:
        if forget:
            parser.again = None
        parser.head_request = head_request
        try:
            out.append(parser.feed(data))
        except ValueError as exc:
            out.append(str(exc))
            return out
    try:
        out.append(parser.feed_eof())
    except ValueError as exc:
        out.append(str(exc))
    return out


def same_with_and_without_echo(reads: list[tuple[bytes, bool]]) -> None:
    for keep in (False, True):
        with_echo = outcome(ResponseParser(keep=keep), reads, forget=False)
        assert with_echo == outcome(ResponseParser(keep=keep), reads, forget=True), reads


def test_the_echo_is_the_full_parser_for_every_pair_of_reads_split_everywhere() -> None:
    for first in ECHO_CORPUS:
        for second in ECHO_CORPUS:
            for head in (False, True):
                # The same read again, another after it, the first again, as HEAD's answer.
                same_with_and_without_echo(
                    [(first, False), (first, False), (second, False), (first, head)]
                )
            both = first + second
            for cut in range(0, len(both) + 1, 1 if len(both) < 400 else 97):
                reads = [(first, False), (both[:cut], False), (both[cut:], False)]
                same_with_and_without_echo([*reads, (first, False), (first, False)])


def test_the_echo_is_kept_only_for_a_read_of_one_whole_response() -> None:
    parser = ResponseParser()
    assert parser.feed(NGINX) == parser.feed(NGINX)
    assert parser.again is NGINX
    length = MAX_ECHO - len(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    at_most = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length + b"a" * length
    parser.feed(at_most)
    assert parser.again is at_most and len(at_most) == MAX_ECHO
    mid = ResponseParser()
    mid.feed(HELLO[:30])
    assert mid.feed(HELLO[30:]) and mid.again == HELLO  # its head held from the read before
    interim = ResponseParser()
    interim.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    interim.feed(HELLO)
    assert interim.again is None  # its bytes began in the read before
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % MAX_ECHO + b"a" * MAX_ECHO
    for not_one in (HELLO + HELLO, HELLO + HELLO[:3], CHUNKED, ECHO_CORPUS[10], big):
        parser = ResponseParser()
        parser.feed(not_one)
        assert parser.again is None, not_one
    parser = ResponseParser()
    parser.feed(HELLO)
    parser.feed(HELLO[:3])  # between responses no more: the echo must not answer
    with pytest.raises(ValueError, match="malformed status line b'HTTHTTP/"):
        parser.feed(HELLO)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(ECHO_CORPUS[:16]), st.booleans(), st.integers(0, 400)),
        max_size=12,
    )
)
def test_the_echo_is_the_full_parser_on_any_stream_cut_anywhere(
    pieces: list[tuple[bytes, bool, int]],
) -> None:
    # Whole reads, and reads cut at an arbitrary point of the stream, repeated.
    reads = []
    for data, head_request, cut in pieces:
        reads.append((data, head_request))
        if cut < len(data):
            reads += [(data[:cut], head_request), (data[cut:], head_request)]
    same_with_and_without_echo(reads)

"""gunicorn's request corpus (``corpus/gunicorn``: its valid and invalid request files, and
what gunicorn makes of each) fed to ``HTTPProtocol``, whole and one byte at a time.

A file's verdict is what its client sees: each answer (status, and the app's echo of method,
target and header count) and whether the connection closed before the client's EOF. It must
be the same however the bytes are split, and the same with the fast path (``--http auto``)
as with h11 alone (``--http h11``): both are computed here, whatever mode this module runs
in, so a disagreement names the file.

Every invalid request is refused, and every valid one is served as gunicorn parses it, but
for the differences tabled below, each with its reason. Many files are HTTP/1.1 requests
without Host, which we refuse whatever else they hold (RFC 9112 section 3.2); such a file is
also run with a Host line added, so that it still tests what it was written for.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from _http_fakes import START, Harness, parse_responses, run

from prefork.http import _parse

CORPUS = Path(__file__).parent / "corpus" / "gunicorn"
EXPECTED: dict[str, dict[str, dict[str, Any]]] = json.loads(
    (CORPUS / "expected.json").read_text(encoding="utf-8")
)
VALID = sorted(path.name for path in (CORPUS / "valid").glob("*.http"))
INVALID = sorted(path.name for path in (CORPUS / "invalid").glob("*.http"))

# -- the known differences -------------------------------------------------------------------

NO_HOST = "HTTP/1.1 without Host: RFC 9112 section 3.2 says answer 400 (h11 does)"
CODING = (
    "a Transfer-Encoding other than one 'chunked' (identity, gzip): h11 answers 501 to a "
    "transfer coding it does not implement (RFC 9112 section 6.1); gunicorn accepts them"
)
OBS_FOLD = (
    "obs-fold, which gunicorn unfolds with permit_obsolete_folding: refused (_lines: a proxy "
    "that reads it otherwise is how requests are smuggled)"
)
PROXY = "a PROXY protocol header (gunicorn's proxy_protocol): we do not speak that protocol"
CONNECT = "CONNECT, the one method we answer 501 (we are no proxy)"
UNDERSCORE = (
    "'_' in a field name: a token character (RFC 9110 section 5.6.2), so h11 accepts it. "
    "gunicorn drops such fields (header_map=drop) or refuses them (header_map=refuse) "
    "because WSGI's environ would merge Transfer_Encoding with Transfer-Encoding; ASGI "
    "gives the app names as sent, and our framing only reads the '-' spellings"
)

#: Valid files we refuse: the statuses we answer with (none: we close, unanswered), and why.
VALID_REFUSED: dict[str, tuple[tuple[int, ...], str]] = {
    "004.http": ((400,), NO_HOST),
    "005.http": ((400,), NO_HOST),
    "006.http": ((400,), NO_HOST),
    "007.http": ((400,), NO_HOST),
    "009.http": ((501,), CODING),
    "010.http": ((400,), NO_HOST),
    "011.http": ((400,), NO_HOST),
    "012.http": ((400,), NO_HOST),
    "013.http": ((400,), NO_HOST),
    "014.http": ((400,), NO_HOST),
    "018.http": ((400,), NO_HOST),
    "021.http": ((400,), NO_HOST),
    # HTTP/1.0 with Connection: keep-alive, kept alive: the second request (1.1) is read
    "022.http": ((200, 400), NO_HOST),
    "023.http": ((400,), NO_HOST),
    "025.http": ((501,), CODING),
    "025_line.http": ((501,), CODING),
    "027.http": (
        (400,),
        "raw non-ASCII bytes in the request-target: only visible ASCII may be sent there "
        "(RFC 9112 section 3.2, RFC 3986: percent-encode the rest); h11 refuses them",
    ),
    "028.http": (
        (400,),
        "whitespace between a field name and its colon (gunicorn's strip_header_spaces): "
        "RFC 9112 section 5.1 says answer 400 (h11 does)",
    ),
    "029.http": ((501,), CODING),
    "030.http": ((501,), CODING),
    "031.http": ((400,), NO_HOST),
    "031compat.http": ((400,), NO_HOST),
    "031compat2.http": ((400,), NO_HOST),
    "099.http": (
        (),
        "a body shorter than its Content-Length (8599 of 17914 bytes): gunicorn's app reads "
        "what came before the EOF; ours waits for the rest, and the EOF closes the connection",
    ),
    "100.http": ((400,), NO_HOST),
    "compat_obs_fold.http": ((400,), OBS_FOLD),
    "compat_obs_fold_huge.http": ((400,), OBS_FOLD),
    "pp_01.http": ((400,), PROXY),
    "pp_02.http": ((400,), PROXY),
    "pp_04.http": ((400,), PROXY),
    "pp_05.http": ((400,), PROXY),
    "rfc9112_smuggle_gzip_chunked_01.http": ((501,), CODING),
    "rfc9112_smuggle_te_identity_chunked_01.http": ((501,), CODING),
    "rfc9112_target_authority_connect_01.http": ((501,), CONNECT),
    "rfc9112_target_authority_ipv6_01.http": ((501,), CONNECT),
}

#: Valid files we serve otherwise than gunicorn parses them (with a Host line added, for those
#: refused for lacking one): the requests as our app sees them (method, target, header
#: count, for the file as it is), and why.
VALID_SERVED_OTHERWISE: dict[str, tuple[list[list[Any]], str]] = {
    "031compat.http": (
        [["-blargh", "/foo", 0]],
        "gunicorn's casefold_http_method upper-cases the method; methods are case-sensitive "
        "(RFC 9110 section 9.1) and reach the app as sent",
    ),
    "040.http": ([["GET", "/keep/same/as?invalid/040", 3]], UNDERSCORE),
}

#: Invalid files we accept (those without Host: once a Host line is added), and why.
INVALID_ACCEPTED: dict[str, str] = {
    "003c.http": (
        "a method in lower case ('-bl'): a token, so a valid method (RFC 9110 section 9.1); "
        "gunicorn refuses it unless permit_unconventional_http_method"
    ),
    "019.http": (
        "X-Forwarded-Proto: https with X-Forwarded-Ssl: off from a trusted proxy: gunicorn "
        "refuses the contradiction; we never read X-Forwarded-Ssl (and X-Forwarded-Proto "
        "only with --proxy-headers)"
    ),
    "040.http": UNDERSCORE,
    "041.http": (
        "Content-Type twice: h11 accepts a repeated field and the app gets both; gunicorn "
        "refuses a repeated singleton field (Host, Content-Type); we refuse a repeated Host"
    ),
    "chunked_07.http": UNDERSCORE,
    "rfc9110_trailer_forbidden_cl_01.http": (
        "Content-Length in the trailer section: h11 accepts any field there, and we drop "
        "trailers (ASGI has no request trailers), so none can reach framing or routing; "
        "RFC 9110 section 6.5.1 lets a recipient ignore them"
    ),
    "rfc9110_trailer_forbidden_host_01.http": "Host in the trailer section: as for Content-Length",
    "rfc9110_trailer_forbidden_te_01.http": (
        "Transfer-Encoding in the trailer section: as for Content-Length"
    ),
}

# -- reading the corpus ----------------------------------------------------------------------

_HEX = re.compile(rb"\\x([0-9A-Fa-f]{2})")
_REQUEST_LINE_11 = re.compile(rb"(?m)^[!-~]+ [!-~]+ HTTP/1\.1\r\n")
_REQUEST_LINE = re.compile(rb"(?m)^[!-~]+ [!-~]+ HTTP/1\.([01])\r\n")
_HOST = re.compile(rb"(?im)^host:")


def read_request(path: Path) -> bytes:
    """The bytes a corpus file stands for, read as gunicorn's tests/treq.py reads them: real
    newlines dropped, then the escapes \\r\\n, \\0, \\n, \\t and \\xHH decoded."""
    data = path.read_bytes().replace(b"\n", b"").replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\0").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    data = _HEX.sub(lambda match: bytes([int(match.group(1), 16)]), data)
    assert b"\\" not in data, f"{path.name}: an escape treq does not decode"
    return data


def lacks_host(data: bytes) -> bool:
    """Whether ``data`` holds an HTTP/1.1 request line, and no Host field anywhere."""
    return _REQUEST_LINE_11.search(data) is not None and _HOST.search(data) is None


def with_host(data: bytes) -> bytes:
    """``data`` with a Host line after each HTTP/1.1 request line."""
    return _REQUEST_LINE_11.sub(lambda match: match.group(0) + b"Host: t\r\n", data)


def limits(config: dict[str, Any]) -> dict[str, int]:
    """Our size limits for a file gunicorn reads with ``config``.

    Over gunicorn's defaults rather than ours: invalid/006.http is a request line too long for
    gunicorn's 4094 bytes, not for our 8190. The field size is passed as it is: both count a
    field line with its CRLF. gunicorn's 0 means its default. Its other settings have no
    equivalent here.
    """
    return {
        "limit_request_line": config.get("limit_request_line", 4094),
        "limit_request_field_size": config.get("limit_request_field_size") or 8190,
        "limit_request_fields": config.get("limit_request_fields", 100),
    }


@cache
def request_of(kind: str, name: str, host: bool) -> tuple[bytes, dict[str, int]]:
    """A file's bytes (with Host lines added, ``host``) and the options to serve them with."""
    data = read_request(CORPUS / kind / name)
    return (with_host(data) if host else data), limits(
        EXPECTED[kind][name].get("gunicorn_config", {})
    )


# -- serving a file --------------------------------------------------------------------------


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, then answers 200 with "method target header-count"."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client left: no answer
        if not message["more_body"]:
            break
    query = scope["query_string"]
    target = scope["raw_path"] + (b"?" + query if query else b"")
    body = b"%s %s %d" % (scope["method"].encode(), target, len(scope["headers"]))
    await send(START)
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class Verdict:
    """What the client of one connection sees."""

    answers: tuple[tuple[int, str], ...]  # (status, body) of each response, in order
    closed: bool  # the connection closed before the client's EOF

    @property
    def statuses(self) -> tuple[int, ...]:
        return tuple(status for status, _ in self.answers)

    def refused(self) -> bool:
        """An error status, then the close; or, for a request that cannot complete, no answer
        at all (the close comes with the client's EOF)."""
        if not self.answers:
            return True
        return self.answers[-1][0] >= 400 and self.closed


def served(
    requests: list[list[Any]], added: list[int] | None = None
) -> tuple[tuple[int, str], ...]:
    """The answers of ``echo`` to ``requests`` (``[method, target, header count]`` each), with
    ``added`` header lines in each (``hosts_added``; it may name requests after a close, which
    get no answer). A fragment is the client's own: gunicorn keeps it, we drop it (as llhttp
    does)."""
    more = added if added is not None else [0] * len(requests)
    return tuple(
        (200, f"{method} {target.partition('#')[0]} {n + extra}")
        for (method, target, n), extra in zip(requests, more, strict=False)
    )


def hosts_added(data: bytes) -> list[int]:
    """How many lines ``with_host`` adds to each request of ``data``: one to each HTTP/1.1
    request, none to an HTTP/1.0 one."""
    return [int(minor == b"1") for minor in _REQUEST_LINE.findall(data)]


async def until_idle(h: Harness) -> None:
    """Let the loop run until no app has run for a few turns (the callbacks they scheduled
    have run too), or for 200 turns. Not ``h.settle()``: an app waiting for the rest of a
    body (099.http) only ends at the client's EOF."""
    quiet = 0
    for _ in range(200):
        await asyncio.sleep(0)
        quiet = 0 if h.state.tasks else quiet + 1
        if quiet == 3:
            return


def serve(data: bytes, options: dict[str, int], how: str) -> Verdict:
    """The verdict on ``data`` fed ``how`` ("whole" or "bytes") to one connection, with the
    parser installed now, followed by the client's EOF."""

    async def main() -> Verdict:
        h = Harness(echo, options)
        h.feed(data, how)
        await until_idle(h)
        closed = h.transport.closed
        if not closed:
            h.eof()
            await until_idle(h)
        assert h.transport.closed and not h.state.tasks  # an EOF ends every connection
        responses = parse_responses(h.out, ["GET"] * 4)
        return Verdict(tuple((r.status, r.body.decode("latin-1")) for r in responses), closed)

    result: Verdict = run(main())
    return result


def _decline(buf: bytes | bytearray, end: int, max_fields: int) -> None:
    return None


_FAST_HEAD = _parse.fast_head  # as imported: before the h11 mode's monkeypatch


@contextmanager
def parser(mode: str) -> Iterator[None]:
    """Parse as ``--http auto`` does, or as ``--http h11`` (the fast path declines every head,
    as conftest's ``http_parser`` fixture makes it)."""
    installed = _parse.fast_head
    _parse.fast_head = _FAST_HEAD if mode == "auto" else _decline
    try:
        yield
    finally:
        _parse.fast_head = installed


def same_split_or_not(name: str, data: bytes, options: dict[str, int]) -> Verdict:
    whole = serve(data, options, "whole")
    by_byte = serve(data, options, "bytes")
    assert by_byte == whole, f"{name}: fed one byte at a time, the verdict differs"
    return whole


@cache
def verdict_with(mode: str, kind: str, name: str, host: bool) -> Verdict:
    """The verdict on a file with the parser of ``mode`` (the same for both runs of the
    module: computed once)."""
    data, options = request_of(kind, name, host)
    with parser(mode):
        return same_split_or_not(f"{name} with --http {mode}", data, options)


def verdict(kind: str, name: str, *, host: bool = False) -> Verdict:
    """The verdict on a file (with Host lines added, ``host``) with the parser this module
    runs with, checked to be the same whole and byte by byte, and with either parser."""
    data, options = request_of(kind, name, host)
    here = same_split_or_not(name, data, options)
    modes = {mode: verdict_with(mode, kind, name, host) for mode in ("auto", "h11")}
    assert modes == {"auto": here, "h11": here}, f"{name}: the parsers disagree"
    return here


# -- the tests -------------------------------------------------------------------------------


def test_every_file_has_its_expectation_and_every_table_entry_its_file() -> None:
    assert sorted(EXPECTED["valid"]) == VALID
    assert sorted(EXPECTED["invalid"]) == INVALID
    assert len(VALID) == 63 and len(INVALID) == 74  # the whole corpus was copied
    assert set(VALID_REFUSED) | set(VALID_SERVED_OTHERWISE) <= set(VALID)
    assert set(INVALID_ACCEPTED) <= set(INVALID)


@pytest.mark.parametrize("name", VALID)
def test_a_valid_request_is_served_as_gunicorn_parses_it_or_tabled(name: str) -> None:
    requests = EXPECTED["valid"][name]["requests"]
    if name in VALID_SERVED_OTHERWISE:
        requests = VALID_SERVED_OTHERWISE[name][0]
    seen = verdict("valid", name)
    if name not in VALID_REFUSED:
        assert seen.answers == served(requests)
        return
    statuses, why = VALID_REFUSED[name]
    assert seen.refused() and seen.statuses == statuses, why
    data, _ = request_of("valid", name, False)
    if why == NO_HOST:
        assert lacks_host(data)
        answers = verdict("valid", name, host=True).answers
        assert answers == served(requests, hosts_added(data))
    elif lacks_host(data):
        # refused for what the table says, not only for lacking Host
        assert verdict("valid", name, host=True).statuses == statuses, why


@pytest.mark.parametrize("name", INVALID)
def test_an_invalid_request_is_refused_or_tabled(name: str) -> None:
    error = EXPECTED["invalid"][name]["error"]  # what gunicorn raises
    seen = verdict("invalid", name)
    data, _ = request_of("invalid", name, False)
    if lacks_host(data):
        assert seen.refused(), f"{name} ({error}) accepted without a Host"
        seen = verdict("invalid", name, host=True)  # refused for what it was written for?
    if name in INVALID_ACCEPTED:
        assert seen.answers and set(seen.statuses) == {200}, INVALID_ACCEPTED[name]
    else:
        assert seen.refused(), f"{name} ({error}) accepted"

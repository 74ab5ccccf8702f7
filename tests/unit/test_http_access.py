"""The access log's atoms (gunicorn's), the debug line of a refused request, the options that
shape every response, and the drop-in spellings of the HTTP flags."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any

import pytest
from _http_fakes import Harness, gated_hello, hello_app, request, run

from prefork import ConfigError
from prefork.http import HTTPConfig
from prefork.http._access import DEFAULT_ACCESS_FORMAT, AtomProbe

EVERY_ATOM = " | ".join(
    f"%({a})s" for a in ["h", "l", "u", "t", "r", "m", "U", "q", "H", "s", "B", "b", "f", "a",
                         "T", "M", "D", "L", "p", "{x-req}i", "{X-A}o",
                         "{PREFORK_ACCESS_TEST}e", "{missing}i"]
)  # fmt: skip


async def streaming_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": [(b"x-o", b"1")]})
    await send({"type": "http.response.body", "body": b"abc", "more_body": True})
    await send({"type": "http.response.body", "body": b"de"})


def access_lines(caplog: pytest.LogCaptureFixture, app: Any, options: dict[str, Any],
                 *raw: bytes, **kw: Any) -> list[str]:  # fmt: skip
    async def main() -> None:
        h = Harness(app, {"access_log": True, **options}, **kw)
        h.feed(b"".join(raw))
        await h.settle()

    caplog.set_level(logging.INFO, logger="prefork.access")
    run(main())
    return [r.getMessage() for r in caplog.records if r.name == "prefork.access"]


def test_every_atom(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFORK_ACCESS_TEST", "env")
    (line,) = access_lines(
        caplog,
        hello_app,
        {"access_log_format": EVERY_ATOM},
        request("GET", "/p?q=1", "X-Req: yes", "Referer: /from", "User-Agent: ua/1"),
    )
    parts = line.split(" | ")
    assert parts[:3] == ["127.0.0.1", "-", "-"]
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", parts[3])
    assert parts[4:15] == ["GET /p?q=1 HTTP/1.1", "GET", "/p", "q=1", "HTTP/1.1", "200", "5",
                           "5", "/from", "ua/1", "0"]  # fmt: skip
    assert all(p.isdigit() for p in parts[15:17]) and re.fullmatch(r"\d+\.\d{6}", parts[17])
    assert parts[18:] == [f"<{os.getpid()}>", "yes", "1", "env", "-"]


def test_the_time_taken_has_microseconds_as_gunicorns(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # perf_counter, not uvloop's loop.time(), which is rounded to the millisecond
    ticks = iter([100.0, 101.000123])  # the app starts, its response is complete
    monkeypatch.setattr("prefork.http._state.perf_counter", lambda: next(ticks))
    lines = access_lines(caplog, hello_app, {"access_log_format": "%(L)s %(D)s %(M)s %(T)s"},
                         request())  # fmt: skip
    assert lines == ["1.000123 1000123 1000 1"]


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "prefork.http"]


@pytest.mark.parametrize(
    ("peer", "raw", "line"),
    [
        (
            ("127.0.0.1", 50000),
            request("GET", "/", "Content-Length: x"),
            "refused a request from 127.0.0.1:50000: 400 Invalid HTTP request.",
        ),
        (
            ("::1", 50001, 0, 0),
            request("GET", "/", "X: " + "a" * 9000),
            "refused a request from [::1]:50001: 431 Request header field too large.",
        ),
        ("", request("GET", "/\x01"), "refused a request from a unix socket: 400 Invalid"),
    ],
)
def test_a_refused_request_is_logged_at_debug_with_its_peer_and_reason(
    caplog: pytest.LogCaptureFixture, peer: Any, raw: bytes, line: str
) -> None:
    async def main() -> None:
        h = Harness(hello_app, peername=peer)
        h.feed(raw)
        await h.settle()

    caplog.set_level(logging.INFO, logger="prefork.http")
    run(main())
    assert refusals(caplog) == []  # only at DEBUG
    caplog.set_level(logging.DEBUG, logger="prefork.http")
    run(main())
    (said,) = refusals(caplog)
    assert said.startswith(line)


def test_a_503_over_limit_concurrency_is_a_refusal_and_a_failed_app_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        gate, app = gated_hello()
        h = Harness(app, {"limit_concurrency": 1})
        h.feed(request())
        h.connect().data_received(request())
        await asyncio.sleep(0)
        gate.set()
        await h.settle()
        h = Harness(failing)
        h.feed(request())
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 500 ")

    caplog.set_level(logging.DEBUG, logger="prefork.http")
    run(main())
    said = [line for line in refusals(caplog) if line.startswith("refused")]
    assert said == ["refused a request from 127.0.0.1:50000: 503 Service unavailable."]


def test_streamed_bytes_and_no_body(caplog: pytest.LogCaptureFixture) -> None:
    lines = access_lines(
        caplog, streaming_app, {"access_log_format": "%(s)s %(B)s %(b)s %({x-o}o)s"}, request()
    )
    assert lines == ["201 5 5 1"]
    caplog.clear()
    lines = access_lines(
        caplog, hello_app, {"access_log_format": "%(s)s %(B)s %(b)s"}, request("HEAD", "/")
    )
    assert lines == ["200 0 -"]


def test_an_http_10_client_without_length_counts_its_bytes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines = access_lines(
        caplog, streaming_app, {"access_log_format": "%(H)s %(B)s"},
        b"GET / HTTP/1.0\r\n\r\n",
    )  # fmt: skip
    assert lines == ["HTTP/1.0 5"]


def test_the_format_is_checked_up_front() -> None:
    assert "%(L)s" in DEFAULT_ACCESS_FORMAT
    fmt = "%(h)s %({X}i)s"  # gunicorn's syntax: a %-format
    assert fmt % AtomProbe() == "- -"
    with pytest.raises(ConfigError, match=r"access log format '%\(zz\)s' is not valid"):
        HTTPConfig(app="m:a", access_log_format="%(zz)s")
    with pytest.raises(ConfigError, match="is not valid"):
        HTTPConfig(app="m:a", access_log_format="%(h)")


def test_headers_option_and_its_refusals() -> None:
    c = HTTPConfig(app="m:a", headers=["X-A: 1", "x-b:two words "])
    assert c.headers == (("X-A", "1"), ("x-b", "two words"))
    assert HTTPConfig(app="m:a", headers=[("X-C", "3")]).headers == (("X-C", "3"),)
    assert HTTPConfig(app="m:a", headers="X-D: 4").headers == (("X-D", "4"),)
    with pytest.raises(ConfigError, match="must look like 'Name: value'"):
        HTTPConfig(app="m:a", headers=["nocolon"])
    with pytest.raises(ConfigError, match="is not a valid header"):
        HTTPConfig(app="m:a", headers=["Bad Name: x"])
    with pytest.raises(ConfigError, match="is not a valid header"):
        HTTPConfig(app="m:a", headers=["X-E: a\x01b"])


def test_responses_carry_the_configured_headers_and_may_drop_date_and_server() -> None:
    async def main() -> None:
        h = Harness(
            hello_app,
            {"headers": ["X-Frame-Options: DENY"], "date_header": False, "server_header": False},
        )
        h.feed(request())
        await h.settle()
        head = bytes(h.out).split(b"\r\n\r\n")[0].lower()
        assert b"x-frame-options: deny" in head
        assert b"date:" not in head and b"server:" not in head

    run(main())

"""The WSGI environ, key by key, as PEP 3333 and gunicorn fill it; and ``wsgi.input`` read
every way PEP 3333 allows, the body split at every point."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from prefork.http._config import HTTPConfig
from prefork.http._scope import build_scope
from prefork.http._state import ServerState
from prefork.http._wsgi_environ import FileWrapper, base_environ, build_environ, split_root
from prefork.http._wsgi_input import WSGIInput


def scope_of(
    target: bytes = b"/",
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    *,
    server: Any = ("127.0.0.1", 8000),
    client: Any = ("10.0.0.9", 50000),
    http_version: bytes = b"1.1",
    method: bytes = b"GET",
    **options: Any,
) -> dict[str, Any]:
    config = HTTPConfig(app="m:app", **options)
    state = ServerState(config, None, asyncio.new_event_loop())  # type: ignore[arg-type]
    state.loop.close()
    return build_scope(state, server, client, method, target, http_version, list(headers))


def environ_of(scope: dict[str, Any]) -> dict[str, Any]:
    environ = build_environ(scope, base_environ(threads=4), "INPUT")
    return environ


def test_a_request_environ_key_by_key() -> None:
    scope = scope_of(
        b"/a%20b/c?x=1&y=%20",
        [
            (b"host", b"example.com"),
            (b"content-type", b"text/plain"),
            (b"content-length", b"3"),
            (b"accept", b"a"),
            (b"accept", b"b"),
            (b"x_forwarded_for", b"6.6.6.6"),  # an underscore: dropped, as gunicorn does
            (b"x-latin", "é".encode("latin-1")),
        ],
        method=b"POST",
    )
    assert environ_of(scope) == {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/a b/c",
        "QUERY_STRING": "x=1&y=%20",
        "RAW_URI": "/a%20b/c?x=1&y=%20",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "10.0.0.9",
        "REMOTE_PORT": "50000",
        "SERVER_SOFTWARE": "prefork",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "3",
        "HTTP_HOST": "example.com",
        "HTTP_ACCEPT": "a,b",
        "HTTP_X_LATIN": "é",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": "INPUT",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }


def test_path_info_is_the_bytes_decoded_as_latin_1() -> None:
    environ = environ_of(scope_of("/caf%C3%A9/é".encode()))
    assert environ["PATH_INFO"] == "/café/é".encode().decode("latin-1")
    assert environ["RAW_URI"] == "/caf%C3%A9/é".encode().decode("latin-1")


@pytest.mark.parametrize(
    ("target", "script_name", "path_info"),
    [
        (b"/api/users", "/api", "/users"),  # the proxy passed the prefix on: stripped
        (b"/api", "/api", ""),
        (b"/users", "/api", "/users"),  # the proxy stripped it already
        (b"/apiary", "/api", "/apiary"),  # not a path segment of it
    ],
)
def test_root_path_is_script_name(target: bytes, script_name: str, path_info: str) -> None:
    environ = environ_of(scope_of(target, root_path="/api"))
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == (script_name, path_info)
    assert environ["RAW_URI"] == target.decode()
    assert split_root(target, "") == ("", target.decode())


def test_proxy_headers_give_the_scheme_and_the_client() -> None:
    headers = [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"1.2.3.4")]
    trusted = environ_of(scope_of(b"/", headers, client=("127.0.0.1", 5), proxy_headers=True))
    assert trusted["wsgi.url_scheme"] == "https" and trusted["REMOTE_ADDR"] == "1.2.3.4"
    assert trusted["REMOTE_PORT"] == "0"
    ignored = environ_of(scope_of(b"/", headers, client=("10.1.1.1", 5), proxy_headers=True))
    assert ignored["wsgi.url_scheme"] == "http" and ignored["REMOTE_ADDR"] == "10.1.1.1"


def test_a_unix_socket_and_http_1_0() -> None:
    environ = environ_of(
        scope_of(b"/", server=("/run/app.sock", None), client=None, http_version=b"1.0")
    )
    assert environ["SERVER_NAME"] == "/run/app.sock" and environ["SERVER_PORT"] == "80"
    assert "REMOTE_ADDR" not in environ and environ["SERVER_PROTOCOL"] == "HTTP/1.0"
    nameless = environ_of(scope_of(b"/", server=None))
    assert (nameless["SERVER_NAME"], nameless["SERVER_PORT"]) == ("localhost", "80")


def test_header_keys_are_cached_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefork.http import _wsgi_environ

    monkeypatch.setattr(_wsgi_environ, "_KEYS", {})
    monkeypatch.setattr(_wsgi_environ, "_MAX_KEYS", 1)
    environ = environ_of(scope_of(b"/", [(b"x-one", b"1"), (b"x-two", b"2"), (b"x-one", b"3")]))
    assert environ["HTTP_X_ONE"] == "1,3" and environ["HTTP_X_TWO"] == "2"
    assert _wsgi_environ._KEYS == {b"x-one": "HTTP_X_ONE"}


# -- wsgi.input ------------------------------------------------------------------------------------

BODY = b"line one\nline two\n\nlast line without end"


def source(pieces: list[bytes]) -> Any:
    feed = iter([*pieces, b""])
    calls = []

    def take() -> bytes:
        calls.append(1)
        return next(feed, b"")

    take.calls = calls  # type: ignore[attr-defined]
    return take


def splits(data: bytes) -> list[list[bytes]]:
    return [[data]] + [[data[:i], data[i:]] for i in range(1, len(data))]


@pytest.mark.parametrize("pieces", splits(BODY))
def test_every_read_gives_the_same_body_wherever_it_was_split(pieces: list[bytes]) -> None:
    assert WSGIInput(source(pieces)).read() == BODY
    assert WSGIInput(source(pieces)).read(None) == BODY
    stream = WSGIInput(source(pieces))
    assert b"".join(iter(lambda: stream.read(5), b"")) == BODY
    assert list(WSGIInput(source(pieces))) == BODY.splitlines(keepends=True)
    assert WSGIInput(source(pieces)).readlines() == BODY.splitlines(keepends=True)
    stream = WSGIInput(source(pieces))
    assert b"".join(iter(lambda: stream.readline(4), b"")) == BODY
    assert stream.readline() == b"" and stream.read(3) == b"" and stream.read() == b""


def test_read_of_exactly_what_came_copies_nothing_and_readlines_stops_at_the_hint() -> None:
    piece = b"x" * 100
    assert WSGIInput(source([piece])).read(100) is piece
    assert WSGIInput(source([])).read(10) == b""
    stream = WSGIInput(source([b"ab\ncd\nef\n"]))
    assert stream.readlines(4) == [b"ab\n", b"cd\n"] and stream.readline() == b"ef\n"
    assert WSGIInput(source([b"abc"])).readline(None) == b"abc"
    assert WSGIInput(source([b"abc"])).read(0) == b""


def test_nothing_is_taken_before_the_app_asks() -> None:
    take = source([b"a", b"b"])
    stream = WSGIInput(take)
    assert take.calls == []
    assert stream.read(1) == b"a" and len(take.calls) == 1

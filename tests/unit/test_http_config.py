"""HTTPConfig validation, and its options as `prefork serve` flags (from the same declarations)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from prefork import ConfigError
from prefork.cli import add_options, given
from prefork.http import HTTPConfig


def test_defaults() -> None:
    c = HTTPConfig(app="m:app")
    assert (c.keep_alive, c.lifespan, c.access_log, c.limit_request_line) == (
        5.0,
        "auto",
        False,
        8190,
    )
    assert c.forwarded_allow_ips == ("127.0.0.1",)
    assert c.limit_request_body == 0  # no body limit unless asked


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"app": "nocolon"}, "module:attr"),
        ({"app": "m:"}, "module:attr"),
        ({"app": 3}, "ASGI callable"),
        ({"app": "m:a", "lifespan": "maybe"}, "auto, on, off"),
        ({"app": "m:a", "root_path": "api"}, "must start with '/'"),
        ({"app": "m:a", "root_path": "/"}, "must start with '/'"),
        ({"app": "m:a", "keep_alive": 0}, "keep_alive"),
        ({"app": "m:a", "header_timeout": True}, "header_timeout"),
        ({"app": "m:a", "body_timeout": "1"}, "body_timeout"),
        ({"app": "m:a", "limit_request_line": 0}, "limit_request_line"),
        ({"app": "m:a", "limit_concurrency": 0}, "limit_concurrency"),
        ({"app": "m:a", "max_requests": -1}, "max_requests"),
        ({"app": "m:a", "max_requests_jitter": True}, "max_requests_jitter"),
        ({"app": "m:a", "limit_request_body": -1}, "limit_request_body"),
        ({"app": "m:a", "limit_request_body": 1.5}, "limit_request_body"),
        ({"app": "m:a", "max_requests_jitter": 5}, "needs max_requests"),
        ({"app": "m:a", "forwarded_allow_ips": "1.2.3.4,bogus"}, "'bogus'"),
        ({"app": "m:a", "forwarded_allow_ips": 5}, "a string of comma-separated IPs or a list"),
        ({"app": "m:a", "forwarded_allow_ips": [1]}, "a string of comma-separated IPs or a list"),
        ({"app": "m:a", "headers": 5}, "headers must be a list of 'Name: value' strings, got 5"),
        ({"app": "m:a", "headers": [5]}, "header 5 must be 'Name: value' or a (name, value) pair"),
        ({"app": "m:a", "headers": [("A", "b", "c")]}, "or a (name, value) pair"),
        (
            {"app": "m:a", "ssl_version": 99},
            "ssl_version must be one of the ssl module's PROTOCOL_",
        ),
        ({"app": "m:a", "ssl_version": True}, "ssl_version must be one of"),
        ({"app": "m:a", "ws_max_size": 2**30 + 1}, "ws_max_size must be at most 1073741824"),
        ({"app": "m:a", "limit_request_line": 2**20 + 1}, "limit_request_line must be at most"),
        ({"app": "m:a", "limit_request_head": 2**20 + 1}, "limit_request_head must be at most"),
        ({"app": "m:a", "limit_request_field_size": 10**30}, "field_size must be at most 1048576"),
        ({"app": "m:a", "limit_request_fields": 32769}, "limit_request_fields must be at most"),
        ({"app": "m:a", "colour": "red"}, "unknown HTTP option 'colour'"),
        ({"keep_alive": 1}, "app is missing"),
    ],
)
def test_bad_values_say_what_and_how(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        HTTPConfig.from_options(options)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_from_options_parses_ip_lists_and_trust() -> None:
    c = HTTPConfig.from_options({"app": "m:a", "forwarded_allow_ips": " 10.0.0.0/8, ,::1 "})
    assert c.forwarded_allow_ips == ("10.0.0.0/8", "::1")
    assert c.trusts("10.2.3.4") and c.trusts("::1")
    assert not c.trusts("11.0.0.1") and not c.trusts("not-an-ip")
    everyone = HTTPConfig.from_options({"app": "m:a", "forwarded_allow_ips": ["*"]})
    assert everyone.trusts("1.1.1.1") and everyone.trusts(None)


def test_unix_socket_peers_are_trusted_only_when_listed() -> None:
    assert not HTTPConfig(app="m:a").trusts(None)  # the default: 127.0.0.1 only
    c = HTTPConfig.from_options({"app": "m:a", "forwarded_allow_ips": "unix, 10.0.0.0/8"})
    assert c.forwarded_allow_ips == ("unix", "10.0.0.0/8")
    assert c.trusts(None) and c.trusts("10.1.1.1") and not c.trusts("unix")
    assert not c.trusts("127.0.0.1")


def test_callable_app_is_accepted() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    assert HTTPConfig(app=app).app is app


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_options(p, HTTPConfig)
    return p


def options(*argv: str) -> dict[str, Any]:
    return given(HTTPConfig, vars(parser().parse_args(argv)))


def test_flags_left_out_take_the_declared_defaults() -> None:
    assert options("main:app") == {"app": "main:app"}
    assert HTTPConfig.from_options(options("main:app")) == HTTPConfig(app="main:app")


def test_cli_options_map_to_config_fields() -> None:
    argv = [
        "m:f", "--factory", "--app-dir", "src", "--keep-alive", "2", "--limit-concurrency",
        "10", "--max-requests", "100", "--max-requests-jitter", "5", "--root-path", "/x",
        "--proxy-headers", "--forwarded-allow-ips", "10.0.0.1, 10.0.0.2", "--lifespan", "on",
        "--access-log", "--header-timeout", "3", "--body-timeout", "4",
        "--limit-request-body", "1048576",
    ]  # fmt: skip
    c = HTTPConfig.from_options(options(*argv))
    assert c == HTTPConfig(
        app="m:f",
        factory=True,
        app_dir="src",
        keep_alive=2.0,
        limit_concurrency=10,
        max_requests=100,
        max_requests_jitter=5,
        root_path="/x",
        proxy_headers=True,
        forwarded_allow_ips=("10.0.0.1", "10.0.0.2"),
        lifespan="on",
        access_log=True,
        header_timeout=3.0,
        body_timeout=4.0,
        limit_request_body=1048576,
    )
    assert options("m:a", "--no-access-log") == {"app": "m:a", "access_log": False}


def test_cli_bad_value_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="keep_alive"):
        HTTPConfig.from_options(options("m:a", "--keep-alive", "-1"))


def test_help_shows_each_flag_with_its_declared_help_and_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    # Python 3.13's argparse prints the metavar of an option with two flags once, at the end.
    assert any(
        f"--keep-alive{metavar}, --timeout-keep-alive SECONDS close idle keep-alive connections "
        "after this long (default 5.0)" in text
        for metavar in (" SECONDS", "")
    )
    assert (
        "--forwarded-allow-ips IPS comma-separated proxy IPs or networks to trust, unix "
        "(unix-socket peers), or * (default 127.0.0.1)" in text
    )
    assert "--access-log, --no-access-log" in text
    assert "--factory APP is a callable returning the ASGI app" in text

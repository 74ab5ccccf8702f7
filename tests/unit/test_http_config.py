"""HTTPConfig validation and the `prefork serve` argument glue."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from prefork.http import HTTPConfig, HTTPConfigError, add_serve_arguments, worker_options_from_args


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
        ({"app": "m:a", "colour": "red"}, "unknown HTTP option 'colour'"),
        ({"keep_alive": 1}, "app: missing"),
    ],
)
def test_bad_values_say_what_and_how(options: dict[str, Any], words: str) -> None:
    with pytest.raises(HTTPConfigError) as info:
        HTTPConfig.from_options(options)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_from_options_parses_ip_lists_and_trust() -> None:
    c = HTTPConfig.from_options({"app": "m:a", "forwarded_allow_ips": " 10.0.0.0/8, ,::1 "})
    assert c.forwarded_allow_ips == ("10.0.0.0/8", "::1")
    assert c.trusts("10.2.3.4") and c.trusts("::1") and c.trusts(None)
    assert not c.trusts("11.0.0.1") and not c.trusts("not-an-ip")
    assert HTTPConfig.from_options({"app": "m:a", "forwarded_allow_ips": ["*"]}).trusts("1.1.1.1")


def test_callable_app_is_accepted() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    assert HTTPConfig(app=app).app is app


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    p.add_argument("--backlog", type=int, default=2048)
    return p


def test_cli_defaults_round_trip_into_options() -> None:
    options = worker_options_from_args(parser().parse_args(["main:app"]))
    assert options["app"] == "main:app" and "limit_concurrency" not in options
    assert options["forwarded_allow_ips"] == "127.0.0.1"
    assert HTTPConfig.from_options(options) == HTTPConfig(app="main:app")


def test_cli_options_map_to_config_fields() -> None:
    ns = parser().parse_args(
        [
            "m:f", "--factory", "--app-dir", "src", "--keep-alive", "2", "--limit-concurrency",
            "10", "--max-requests", "100", "--max-requests-jitter", "5", "--root-path", "/x",
            "--proxy-headers", "--forwarded-allow-ips", "10.0.0.1, 10.0.0.2", "--lifespan", "on",
            "--access-log", "--header-timeout", "3", "--body-timeout", "4", "--backlog", "64",
            "--limit-request-body", "1048576",
        ]
    )  # fmt: skip
    c = HTTPConfig.from_options(worker_options_from_args(ns))
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
    assert parser().parse_args(["m:a", "--no-access-log"]).access_log is False


def test_options_from_a_namespace_with_only_some_attributes() -> None:
    options = worker_options_from_args(argparse.Namespace(app="m:a", keep_alive=3.0))
    assert options == {"app": "m:a", "keep_alive": 3.0}


def test_cli_bad_value_raises_config_error() -> None:
    with pytest.raises(HTTPConfigError, match="keep_alive"):
        worker_options_from_args(parser().parse_args(["m:a", "--keep-alive", "-1"]))


def test_help_has_a_line_per_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--factory", "--app-dir", "--keep-alive", "--limit-concurrency",
                 "--max-requests", "--max-requests-jitter", "--root-path", "--proxy-headers",
                 "--forwarded-allow-ips", "--lifespan", "--access-log", "--header-timeout",
                 "--body-timeout", "--limit-request-body"):  # fmt: skip
        assert flag in text

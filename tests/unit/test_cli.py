"""The command line's refusals: one line on stderr, exit code 2, nothing bound or forked."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import prefork
from prefork import cli
from prefork.config import MasterConfig
from prefork.core._options import ConfigError
from prefork.master import _setup as setup


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["serve", *argv])
    err = capsys.readouterr().err.strip()
    return code, err


def test_app_module_that_does_not_exist(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "no_such_app_module:app")
    assert code == 2
    assert err == (
        "prefork: error: cannot import app 'no_such_app_module:app': "
        "no module named 'no_such_app_module'; check APP and --app-dir"
    )


def test_preload_reports_the_import_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "broken_app_mod.py").write_text("raise RuntimeError('boom at import')\n")
    code, err = run(capsys, "--app-dir", str(tmp_path), "--preload", "broken_app_mod:app")
    assert code == 2
    *trace, line = err.splitlines()  # the user's frames only, then one line
    assert trace == [
        "Traceback (most recent call last):",
        f'  File "{tmp_path}/broken_app_mod.py", line 1, in <module>',
        "    raise RuntimeError('boom at import')",
        "RuntimeError: boom at import",
    ]
    assert line == (
        "prefork: error: cannot import app 'broken_app_mod:app': RuntimeError: boom at import "
        f"({tmp_path}/broken_app_mod.py, line 1)"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bind", "nowhere", "json:app"], "bad address 'nowhere'"),
        (["--workers", "-1", "json:app"], "--workers must be 1 or more, got -1"),
        (["--timeout", "-1", "json:app"], "timeout must be"),
        (["--keep-alive", "0", "json:app"], "keep_alive"),
        (["jsonapp"], "not 'module:attr'"),
        (["--ws-max-size", "0", "json:app"], "ws_max_size must be a whole number >= 1"),
        (["--ws-ping-interval", "-1", "json:app"], "ws_ping_interval must be"),
        (["--workers", "100000000000000000000000000", "json:app"], "workers must be at most 1024"),
        (["--backlog", "99999999999999999999", "json:app"], "backlog must be at most 65535"),
        (["--fd", "99999999999999999999", "json:app"], "fd must be at most 2147483647"),
        (["--bind", "fd://\u00b2", "json:app"], "fd:// needs a number"),
        (["--ssl-version", "99", "json:app"], "ssl_version must be one of"),
        (["--umask", "7777", "json:app"], "umask must be at most 0o777"),
        (["--timeout", "1e300", "json:app"], "timeout must be at most 604800 seconds, got 1e+300"),
    ],
)
def test_bad_values(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("prefork: error: ") and message in err
    assert "\n" not in err


def test_address_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        code, err = run(capsys, "--bind", f"127.0.0.1:{port}", "--app-dir", "examples", "hello:app")
    finally:
        holder.close()
    assert code == 2
    assert "address already in use" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--wokers", "2", "json:app"], "unknown flag --wokers (did you mean --workers?)"),
        (
            ["--head", "5", "json:app"],
            "unknown flag --head (did you mean --header or --header-timeout?)",
        ),
        (["--zzz=1", "json:app"], "unknown flag --zzz; see 'prefork serve --help'"),
        (["-q", "json:app"], "unknown flag -q"),
    ],
)
def test_unknown_flags_are_named_never_abbreviated_nor_taken_for_app(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("prefork: error: ") and message in err and err.count("\n") == 1


def test_values_that_look_like_flags_are_left_to_argparse() -> None:
    args = cli.build_parser().parse_args(["serve", "-w3", "--root-path=/x", "--", "json:app"])
    assert (args.workers, args.root_path, args.app) == (3, "/x", "json:app")
    args = cli.build_parser().parse_args(["serve", "--timeout", "-1", "a:b"])
    assert args.timeout == -1.0  # refused later by the option's own check, with its message


@pytest.mark.parametrize("flag", ["--version", "-v"])
def test_version(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([flag])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"prefork {prefork.__version__}\n"


def test_serve_needs_a_worker(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "--workers", "0", "json:app")
    assert (code, err) == (2, "prefork: error: --workers must be 1 or more, got 0")


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in [
        "--bind", "--workers", "--timeout", "--graceful-timeout", "--boot-timeout", "--recycle",
        "--max-requests", "--max-requests-jitter", "--keep-alive", "--limit-concurrency",
        "--backlog", "--root-path", "--proxy-headers", "--forwarded-allow-ips", "--lifespan",
        "--access-log", "--log-level", "--pid", "--factory", "--app-dir", "--preload",
    ]:  # fmt: skip
        assert flag in out


def test_default_workers_is_web_concurrency_else_the_usable_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    assert setup.default_workers({}) == 3
    assert setup.default_workers({"WEB_CONCURRENCY": "7"}) == 7
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY must be a whole number, got 'x'"):
        setup.default_workers({"WEB_CONCURRENCY": "x"})


def test_app_below_a_module_that_is_not_a_package(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "--app-dir", "examples", "hello.sub:app")
    assert code == 2
    assert err == (
        "prefork: error: cannot import app 'hello.sub:app': no module named 'hello.sub' "
        "('hello' is not a package); check APP and --app-dir"
    )


def test_pid_file_in_a_missing_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    where = tmp_path / "missing" / "prefork.pid"
    argv = ["--bind", "127.0.0.1:0", "--pid", str(where), "--app-dir", "examples", "hello:app"]
    code, err = run(capsys, *argv)
    assert code == 2
    assert err == (
        f"prefork: error: cannot write pid file {str(where)!r}: "
        f"no directory {str(where.parent)!r}; create it first"
    )


def test_umask_is_read_in_octal(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.build_parser().parse_args(["serve", "--umask", "027", "json:app"])
    assert cli.given(MasterConfig, vars(args)) == {"umask": 0o27}
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", "--umask", "9", "json:app"])
    assert "argument --umask: invalid octal value: '9'" in capsys.readouterr().err


def test_an_unreadable_certificate_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "--ssl-certfile", "/nonexistent/cert.pem", "json:app")
    assert (code, err) == (
        2,
        "prefork: error: cannot use the TLS certificate '/nonexistent/cert.pem': "
        "No such file or directory; check --ssl-certfile, --ssl-keyfile and "
        "--ssl-keyfile-password",
    )


@pytest.mark.parametrize(("word", "value"), [("false", False), ("True", True), (" 0 ", False)])
def test_ws_per_message_deflate_takes_uvicorns_spelling(
    capsys: pytest.CaptureFixture[str], word: str, value: bool
) -> None:
    code = cli.main(["serve", "--ws-per-message-deflate", word, "--print-config", "json:app"])
    assert code == 0
    assert f"ws-per-message-deflate = {str(value).lower()}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ws", "websockets"], "invalid choice: 'websockets'"),
        (["--ws-per-message-deflate", "maybe"], "--ws-per-message-deflate: invalid truth value"),
    ],
)
def test_bad_websocket_flags(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", *argv, "json:app"])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err

"""What a uvicorn or gunicorn user types: their aliases work, and their flags prefork does not
take say what to do instead (never a misleading close spelling: --reload is not --preload)."""

from __future__ import annotations

import logging

import pytest

from prefork import _serve_command, cli
from prefork.core._options import FOREIGN_FLAGS
from prefork.master import _setup as setup

EXTRA = "--reload watches directories: name them with --reload-dir DIR, and the files with "
WORKER = "prefork picks the worker from the app (an ASGI app runs on its HTTP worker); no worker"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--reload-engine", "poll"], "unknown flag --reload-engine: --reload watches with "
         "watchfiles (inotify, or polling where it must); there is no engine to choose"),
        (["--reload-extra-file", "a.txt"], f"unknown flag --reload-extra-file: {EXTRA}"),
        (["--pythonpath", "x"], "unknown flag --pythonpath: name the directory APP is imported "
         "from with --app-dir DIR; see 'prefork serve --help'"),
        (["-k", "uvicorn.workers.UvicornWorker"], f"unknown flag -k: {WORKER}"),
        (["-kgthread"], f"unknown flag -k: {WORKER}"),
        (["--worker-class=sync"], f"unknown flag --worker-class: {WORKER}"),
        (["--worker-connections", "9"], "unknown flag --worker-connections: --limit-concurrency"),
        (["-D"], "unknown flag -D: prefork stays in the foreground; run it under systemd"),
    ],
)  # fmt: skip
def test_another_servers_flag_says_what_to_do_instead(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as leaving:
        cli.build_parser().parse_args(["serve", *argv, "main:app"])
    assert leaving.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prefork: error: {message}") and err.count("\n") == 1
    assert "--preload" not in err and "--root-path" not in err and "--reload-exclude" not in err


def test_no_foreign_flag_is_one_of_ours() -> None:
    serve = _serve_command._serve_parser(cli.build_parser())
    assert not FOREIGN_FLAGS.keys() & serve._option_string_actions.keys()


def test_only_serve_answers_for_uvicorn_and_gunicorn(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["load", "--reload-engine", "http://x/"])
    assert "no engine" not in capsys.readouterr().err


def test_uvicorns_timeout_graceful_shutdown_is_graceful_timeout() -> None:
    args = cli.build_parser().parse_args(["serve", "--timeout-graceful-shutdown", "5", "m:app"])
    assert args.graceful_timeout == 5.0
    keys = setup._keys(_serve_command.SERVE_CONFIGS)  # a config file's key too
    assert keys["timeout-graceful-shutdown"] == keys["graceful-timeout"]


def test_log_level_trace_is_below_debug() -> None:
    args = cli.build_parser().parse_args(["serve", "--log-level", "trace", "m:app"])
    setup.configure_logging(args.log_level, None, None, None)
    root = logging.getLogger()
    assert root.level == setup.TRACE == 5 < logging.DEBUG
    assert logging.getLevelName(setup.TRACE) == "TRACE"
    assert root.isEnabledFor(setup.TRACE)


def test_gunicorns_threads_and_granians_interface_are_options() -> None:
    args = cli.build_parser().parse_args(["serve", "--threads", "4", "--interface", "wsgi", "m:a"])
    assert (args.threads, args.interface) == (4, "wsgi")
    keys = setup._keys(_serve_command.SERVE_CONFIGS)  # a gunicorn config file's `threads = 4` too
    assert "threads" in keys and "interface" in keys


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--threads", "0"], "threads must be a whole number >= 1, got 0"),
        (["--interface", "rsgi"], "invalid choice: 'rsgi'"),
    ],
)
def test_a_bad_threads_or_interface_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    try:
        assert cli.main(["serve", *argv, "m:app"]) == 2
    except SystemExit as leaving:  # argparse's own refusal
        assert leaving.code == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1

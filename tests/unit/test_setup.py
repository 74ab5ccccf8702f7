"""`prefork serve`'s set-up before the master starts: config file, env file, directory,
logging, the bind spellings, --check-config and --print-config."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from prefork import _serve_command, cli
from prefork.core._options import ConfigError
from prefork.master import _setup as setup

APP_DIR = str(Path(__file__).resolve().parents[2] / "examples")


def serve(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["serve", *argv])
    out, err = capsys.readouterr()
    return code, out, err.strip()


# --- the config file -------------------------------------------------------------------


def test_a_config_file_gives_options_and_flags_override_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    conf = tmp_path / "prefork.toml"
    conf.write_text(
        'app = "hello:app"\n'
        f"app-dir = {json.dumps(APP_DIR)}\n"
        "workers = 3\nkeep_alive = 7.5\naccess-log = true\n"
        'bind = "127.0.0.1:9001"\numask = "027"\n'
    )
    code, out, _ = serve(capsys, "-c", str(conf), "--workers", "2", "--print-config")
    assert code == 0
    lines = out.splitlines()
    assert "workers = 2" in lines  # the flag wins over the file
    assert "keep-alive = 7.5" in lines and "access-log = true" in lines
    assert 'bind = ["127.0.0.1:9001"]' in lines and "umask = 23" in lines
    assert 'app = "hello:app"' in lines and "# pid is not set" in lines


def test_pyproject_tool_prefork_is_read_from_the_working_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.prefork]\napp = "hello:app"\napp-dir = {json.dumps(APP_DIR)}\nworkers = 5\n'
    )
    monkeypatch.chdir(tmp_path)
    code, out, _ = serve(capsys, "--print-config")
    assert code == 0 and "workers = 5" in out.splitlines()


def test_a_pyproject_without_a_prefork_table_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.other]\nx = 1\n")
    monkeypatch.chdir(tmp_path)
    assert setup.default_config_file() is None
    (tmp_path / "pyproject.toml").write_text("not toml [")
    assert setup.default_config_file() is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wrkers = 2\n", "unknown key 'wrkers'; did you mean 'workers'?"),
        ("zzz = 2\n", "unknown key 'zzz'"),
        ("bind = 3\n", "bind must be a string or a list of them"),
        ("preload = 1\n", "preload must be true or false"),
        ('workers = "many"\n', "workers = 'many' is not valid"),
        ("workers = [\n", "is not valid TOML"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    code, _, err = serve(capsys, "-c", str(conf), "json:app")
    assert code == 2
    assert err.startswith(f"prefork: error: config file {str(conf)!r}") and message in err
    assert "\n" not in err


def test_a_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = serve(capsys, "-c", str(tmp_path / "none.toml"), "json:app")
    assert (code, err) == (
        2,
        f"prefork: error: cannot read config file {str(tmp_path / 'none.toml')!r}: "
        "No such file or directory",
    )


def test_no_app_anywhere(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = serve(capsys, "--workers", "1")
    assert (code, err) == (
        2,
        "prefork: error: no APP given; name it (module:attr) or set app in the config file",
    )


def test_check_config_checks_the_app_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = serve(capsys, "--app-dir", APP_DIR, "--check-config", "hello:app")
    assert (code, err.splitlines()) == (
        0,
        [
            "prefork: template off: no templates (--template off); workers import the code",
            "prefork: the options and the app are fine",
        ],
    )
    code, _, err = serve(capsys, "--check-config", "no_such_module_q:app")
    assert code == 2 and "no module named 'no_such_module_q'" in err


@pytest.mark.parametrize(
    ("argv", "template"),
    [
        ((), "off"),  # the default
        (("--template",), "on"),  # bare: on, as before it took a value
        (("--template", "off"), "off"),
        (("--template", "auto"), "auto"),
        (("--template=on",), "on"),
        (("--template", "--workers", "2"), "on"),
        (("--template", "--", "hello:app"), "on"),
    ],
)
def test_template_flag_takes_auto_on_off_and_alone_means_on(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], template: str
) -> None:
    # the app comes last: a bare --template before it must not take it for its value
    app = () if "--" in argv else ("hello:app",)
    code, out, _ = serve(capsys, "--app-dir", APP_DIR, "--print-config", *argv, *app)
    assert code == 0 and f'template = "{template}"' in out.splitlines()


def test_template_flag_given_last_and_before_the_app(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = serve(capsys, "--app-dir", APP_DIR, "--print-config", "hello:app", "--template")
    assert code == 0 and 'template = "on"' in out.splitlines()
    code, out, _ = serve(capsys, "--app-dir", APP_DIR, "--print-config", "--template", "hello:app")
    assert code == 0 and 'template = "on"' in out.splitlines()


def test_template_refusals_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = serve(capsys, "--template", "--preload", "--check-config", "hello:app")
    assert (code, err) == (
        2,
        "prefork: error: template and preload both share the code's memory; choose template, "
        "which keeps loading new code on reload (--template, not --preload)",
    )
    code, _, err = serve(capsys, "--template", "off", "--refork-after", "5", "hello:app")
    assert (code, err) == (
        2,
        "prefork: error: refork_after promotes a worker to the next template: add --template "
        "auto or on (template='auto' or True), without --preload",
    )
    code, _, err = serve(capsys, "--refork-after", "5", "hello:app")  # off by default
    assert code == 2 and "add --template auto or on" in err
    argv = ("--app-dir", APP_DIR, "--template", "auto", "--preload", "--check-config", "hello:app")
    code, _, err = serve(capsys, *argv)  # auto with --preload: no template, no error
    assert code == 0 and "template auto: no templates (--preload)" in err


def test_template_in_a_config_file_takes_a_word_or_true_false(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    conf = tmp_path / "prefork.toml"
    for value in ("true", "false", '"auto"', '"off"'):  # true and false: on and off
        conf.write_text(f'app = "hello:app"\ntemplate = {value}\n')
        code, out, _ = serve(capsys, "--app-dir", APP_DIR, "-c", str(conf), "--print-config")
        assert code == 0 and f"template = {value}" in out.splitlines()
    conf.write_text('app = "hello:app"\ntemplate = false\nrefork-after = "5"\n')
    code, _, err = serve(capsys, "--app-dir", APP_DIR, "-c", str(conf), "--check-config")
    assert code == 2 and "refork_after promotes a worker to the next template" in err
    conf.write_text('app = "hello:app"\ntemplate = "sometimes"\n')
    code, _, err = serve(capsys, "--app-dir", APP_DIR, "-c", str(conf), "--print-config")
    assert code == 2 and "template must be auto, on or off" in err


# --- environment, directory, binds ---------------------------------------------------------


def test_env_file_lines(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# a comment\n\nA=1\nexport B = 'two words'\nC=\"x\"\nD=\n")
    environ: dict[str, str] = {}
    setup.load_env_file(str(env_file), environ)
    assert environ == {"A": "1", "B": "two words", "C": "x", "D": ""}
    env_file.write_text("A=1\nnot a line\n")
    with pytest.raises(ConfigError, match=r"line 2: expected KEY=VALUE"):
        setup.load_env_file(str(env_file), {})
    with pytest.raises(ConfigError, match="cannot read env file"):
        setup.load_env_file(str(tmp_path / "missing"), {})


def test_env_file_and_chdir_apply_before_the_app_is_looked_for(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # restored after the test, whatever --chdir does
    (tmp_path / "app.env").write_text("PREFORK_TEST_ENV_FILE=seen\n")
    monkeypatch.delenv("PREFORK_TEST_ENV_FILE", raising=False)
    argv = ["--env-file", "app.env", "--chdir", APP_DIR, "--check-config", "hello:app"]
    code, _, err = serve(capsys, *argv)
    assert (code, os.environ["PREFORK_TEST_ENV_FILE"], os.getcwd()) == (0, "seen", APP_DIR)
    monkeypatch.delenv("PREFORK_TEST_ENV_FILE")
    code, _, err = serve(capsys, "--chdir", str(tmp_path / "nowhere"), "hello:app")
    assert code == 2 and "cannot change to directory" in err


def test_uvicorn_spellings_of_bind() -> None:
    assert setup.binds(None, None, None, None) == []
    assert setup.binds("0.0.0.0", None, None, None) == ["0.0.0.0:8000"]
    assert setup.binds(None, 9000, None, None) == ["127.0.0.1:9000"]
    assert setup.binds("::1", 80, "/tmp/s", 3) == ["[::1]:80", "unix:/tmp/s", "fd://3"]


def test_host_and_port_add_to_bind_and_replace_the_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--app-dir", APP_DIR, "--port", "9100", "--print-config", "hello:app"]
    code, out, _ = serve(capsys, *args)
    assert code == 0 and 'bind = ["127.0.0.1:9100"]' in out.splitlines()  # what it binds
    master, effective = _serve_command._serve_master(
        cli.build_parser().parse_args(["serve", *args]), _serve_command.ServeOptions(port=9100)
    )
    assert effective["listen"] == ["127.0.0.1:9100"]
    assert master._brokers["http"].config.listen == ("127.0.0.1:9100",)
    with pytest.raises(ConfigError, match="port must be a port number 0-65535, got 70000"):
        _serve_command.ServeOptions(port=70000)


# --- logging ---------------------------------------------------------------------------------


def test_error_and_access_log_files(tmp_path: Path) -> None:
    setup.configure_logging("info", None, str(tmp_path / "e.log"), str(tmp_path / "a.log"))
    logging.getLogger("prefork.master").info("to the error log")
    logging.getLogger("prefork.access").info("to the access log")
    for h in logging.getLogger().handlers + logging.getLogger("prefork.access").handlers:
        h.flush()
    assert "to the error log" in (tmp_path / "e.log").read_text()
    assert (tmp_path / "a.log").read_text() == "to the access log\n"
    assert "to the access log" not in (tmp_path / "e.log").read_text()
    with pytest.raises(ConfigError, match="cannot open log file"):
        setup.configure_logging("info", None, str(tmp_path / "no" / "e.log"), None)


@pytest.mark.parametrize("kind", ["json", "toml", "ini"])
def test_log_config_files(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out.log"
    dict_config = {
        "version": 1,
        "handlers": {"f": {"class": "logging.FileHandler", "filename": str(out)}},
        "root": {"handlers": ["f"], "level": "INFO"},
    }
    path = tmp_path / f"log.{kind}"
    if kind == "json":
        path.write_text(json.dumps(dict_config))
    elif kind == "toml":
        path.write_text(
            'version = 1\n[handlers.f]\nclass = "logging.FileHandler"\n'
            f"filename = {json.dumps(str(out))}\n"
            '[root]\nhandlers = ["f"]\nlevel = "INFO"\n'
        )
    else:
        path.write_text(
            "[loggers]\nkeys=root\n[handlers]\nkeys=f\n[formatters]\nkeys=\n"
            "[logger_root]\nlevel=INFO\nhandlers=f\n"
            f"[handler_f]\nclass=FileHandler\nargs=({str(out)!r},)\n"
        )
    setup.configure_logging("warning", str(path), None, None)
    logging.getLogger("prefork.master").info("configured by file")
    for h in logging.getLogger().handlers:
        h.flush()
    assert "configured by file" in out.read_text()


def test_bad_log_configs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read log config"):
        setup.configure_logging("info", str(tmp_path / "missing.json"), None, None)
    with pytest.raises(ConfigError, match="cannot read log config"):
        setup.configure_logging("info", str(tmp_path / "missing.ini"), None, None)
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 99}')
    with pytest.raises(ConfigError, match=r"log config .*bad\.json' is not valid"):
        setup.configure_logging("info", str(bad), None, None)


def test_an_access_log_file_turns_the_access_log_on(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = serve(
        capsys, "--access-logfile", "-", "--app-dir", APP_DIR, "--print-config", "hello:app"
    )
    assert code == 0 and 'access-logfile = "-"' in out.splitlines()


def test_print_config_shows_what_serve_applies_itself(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "6")
    code, out, _ = serve(capsys, "--app-dir", APP_DIR, "--print-config", "hello:app")
    lines = out.splitlines()
    assert code == 0 and "workers = 6" in lines and 'bind = ["127.0.0.1:8000"]' in lines

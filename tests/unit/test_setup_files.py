"""The files `prefork serve` reads before the master starts (config, env, log config), fed
hostile input: each is one `prefork: error:` line naming the file, exit code 2, and no file is
read past `MAX_FILE_BYTES`."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from prefork import cli
from prefork.core._options import ConfigError
from prefork.master import _setup as setup

CAP = setup.MAX_FILE_BYTES
DIGITS = sys.get_int_max_str_digits()


def short(value: object) -> str:
    """A test id: the start of a (maybe huge) input."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return text[:24]


def serve(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["serve", *argv])
    return code, capsys.readouterr().err.strip()


class Endless:
    """A file that never ends (as /dev/zero), counting what is read of it."""

    def __init__(self) -> None:
        self.taken = 0

    def __enter__(self) -> Endless:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def read(self, size: int = -1) -> bytes:
        assert size >= 0, "read to the end of an endless file"
        self.taken += size
        return b"\0" * size


# --- the bounded read ----------------------------------------------------------------------


@pytest.mark.parametrize("what", ["config file", "env file", "log config"])
def test_an_endless_file_is_read_up_to_the_cap_and_no_further(
    monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    endless = Endless()
    monkeypatch.setattr(setup, "open", lambda path, mode: endless, raising=False)
    with pytest.raises(ConfigError) as info:
        setup.read_text("endless", what)
    assert str(info.value) == f"{what} 'endless' is larger than {CAP} bytes, the most prefork reads"
    assert endless.taken == CAP + 1


@pytest.mark.parametrize(
    ("flag", "what"),
    [("-c", "config file"), ("--env-file", "env file"), ("--log-config", "log config")],
)
def test_dev_zero_is_one_line_through_the_command_line(
    capsys: pytest.CaptureFixture[str], flag: str, what: str
) -> None:
    code, err = serve(capsys, flag, "/dev/zero", "--check-config", "json:app")
    assert (code, err) == (
        2,
        f"prefork: error: {what} '/dev/zero' is larger than {CAP} bytes, the most prefork reads",
    )


def test_a_fifo_is_read_up_to_the_cap(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    written: list[int] = []

    def write(chunks: int) -> None:
        with open(fifo, "wb") as pipe:
            try:
                for _ in range(chunks):
                    written.append(pipe.write(b"x" * 65536))
                    pipe.flush()
            except BrokenPipeError:
                pass  # the reader stopped at the cap and closed its end

    writer = threading.Thread(target=write, args=(10 * CAP // 65536,))
    writer.start()
    with pytest.raises(ConfigError, match=f"is larger than {CAP} bytes"):
        setup.read_text(str(fifo), "env file")
    writer.join(10)
    assert not writer.is_alive() and sum(written) < 2 * CAP
    # A short one (bash's <(...) is a pipe too) is read whole.
    writer = threading.Thread(target=lambda: fifo.write_text("A=1\n"))
    writer.start()
    environ: dict[str, str] = {}
    setup.load_env_file(str(fifo), environ)
    writer.join(10)
    assert environ == {"A": "1"}


def test_a_directory_or_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        setup.read_text(str(tmp_path), "config file")
    assert str(info.value) == f"cannot read config file {str(tmp_path)!r}: Is a directory"
    with pytest.raises(ConfigError) as info:
        setup.read_text(str(tmp_path / "none"), "log config")
    assert str(info.value) == (
        f"cannot read log config {str(tmp_path / 'none')!r}: No such file or directory"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission_is_one_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked.toml"
    locked.write_text("workers = 2\n")
    locked.chmod(0)
    with pytest.raises(ConfigError, match=r"cannot read config file .*: Permission denied$"):
        setup.read_text(str(locked), "config file")


def test_bytes_that_are_not_utf8_are_named_by_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'workers = 2\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        setup.read_text(str(path), "config file")
    assert str(info.value) == (
        f"config file {str(path)!r} line 2 is not UTF-8 (byte 0xe9 at offset 23); save it as UTF-8"
    )


# --- the config file -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"workers = 2024-01-01\n", ": workers must be a whole number, not a date"),
        (b"workers = 07:32:00\n", ": workers must be a whole number, not a time"),
        (b"timeout = 1979-05-27T07:32:00Z\n", ": timeout must be a number, not a date-time"),
        (b"workers = 2.5\n", ": workers must be a whole number, not a float"),
        (b"keep-alive = {a = 1}\n", ": keep-alive must be a number, not a table"),
        (b"umask = true\n", ": umask must be a whole number, not a boolean"),
        (
            b"ws-per-message-deflate = 1\n",
            ": ws-per-message-deflate must be true or false, not an integer",
        ),
        (b"preload = [true]\n", ": preload must be true or false, not an array"),
        (b"bind = [1]\n", ": bind must be a string or a list of them, not an integer"),
        (b"name = 2024-01-01\n", ": name must be a string, not a date"),
        (b"access-logformat = {}\n", ": access-logformat must be a string, not a table"),
        (b'pid = "a\\u0000b"\n', ": pid holds a NUL character; remove it"),
        (b'bind = ["x:1", "\\u0000"]\n', ": bind holds a NUL character; remove it"),
        (
            b"forwarded-allow-ips = 5\n",
            ": forwarded-allow-ips must be a string of "
            "comma-separated IPs or a list of them, got 5",
        ),
        (
            b'log-level = "loud"\n',
            ": log-level must be one of critical, error, warning, info, debug, trace, got 'loud'",
        ),
        (
            b"workers = 100000000000000000000000000\n",
            ": workers must be at most 1024, got 100000000000000000000000000",
        ),
        (b"backlog = 65536\n", ": backlog must be at most 65535, got 65536"),
        (b"timeout = inf\n", ": timeout must be a number of seconds >= 0, got inf"),
        (
            b"timeout = 1" + b"0" * 30 + b"\n",
            ": timeout must be at most 604800 seconds, got 1000000000000000000000000000000",
        ),
        (b'workers = "9' + b"9" * 5000 + b'"\n', ": workers = '" + "9" * 56 + "... is not valid"),
        (b"x" * 100 + b" = 1\n", ": unknown key '" + "x" * 56 + "..."),
        (
            b"no-server-header = true\n",
            ": unknown key 'no-server-header'; did you mean 'server-header'?",
        ),
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", " is not valid TOML: it nests too deeply"),
        (
            b"workers = " + b"9" * 5000 + b"\n",
            f" is not valid TOML: a number has more than {DIGITS} digits",
        ),
        (
            b'app = "caf\xe9:app"\n',
            " line 1 is not UTF-8 (byte 0xe9 at offset 10); save it as UTF-8",
        ),
    ],
    ids=short,
)
def test_a_hostile_config_file_is_one_line_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, message: str
) -> None:
    conf = tmp_path / "hostile.toml"
    conf.write_bytes(content)
    code, err = serve(capsys, "-c", str(conf), "--check-config", "json:app")
    assert (code, err) == (2, f"prefork: error: config file {str(conf)!r}{message}")


def test_values_of_the_right_type_are_taken_from_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    conf = tmp_path / "ok.toml"
    conf.write_text(
        'app = "json:app"\ntimeout = 20\nkeep-alive = 2.5\numask = 18\n'
        'ws-per-message-deflate = "off"\nforwarded-allow-ips = ["10.0.0.0/8", "unix"]\n'
        'header = "X-A: 1"\n'
    )
    code = cli.main(["serve", "-c", str(conf), "--print-config"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert {
        "timeout = 20",
        "keep-alive = 2.5",
        "umask = 18",
        "ws-per-message-deflate = false",
        'forwarded-allow-ips = ["10.0.0.0/8", "unix"]',
        'header = ["X-A: 1"]',
    } <= set(lines)


def test_a_pyproject_whose_tool_prefork_is_not_a_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("pyproject.toml").write_text("[tool]\nprefork = 5\n")
    code, err = serve(capsys, "--check-config", "json:app")
    assert (code, err) == (
        2,
        "prefork: error: config file 'pyproject.toml': [tool.prefork] must be a table, "
        "not an integer",
    )
    code, err = serve(capsys, "-c", "pyproject.toml", "--check-config", "json:app")
    assert code == 2 and "[tool.prefork] must be a table, not an integer" in err
    Path("pyproject.toml").write_text('tool = "prefork"\n')
    code, err = serve(capsys, "-c", "pyproject.toml", "--check-config", "json:app")
    assert code == 2 and "[tool.prefork] must be a table, not a string" in err


@pytest.mark.parametrize(
    "content",
    [b'tool = "prefork"\n', b"[tool.prefork]\nx = 'caf\xe9'\n", b"[" * 5000, b"a = 1\n" * CAP],
    ids=short,
)
def test_a_pyproject_that_cannot_be_read_is_left_to_other_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("pyproject.toml").write_bytes(content)
    assert setup.default_config_file() is None


def test_the_default_pyproject_is_read_up_to_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endless = Endless()
    monkeypatch.setattr(setup, "open", lambda path, mode: endless, raising=False)
    assert setup.default_config_file() is None
    assert endless.taken == CAP + 1


# --- the env file ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"A=1\nB=b\x00c\n", " line 2: a NUL byte cannot be in the environment"),
        (b"A=1\n\nB=caf\xe9\n", " line 3 is not UTF-8 (byte 0xe9 at offset 10); save it as UTF-8"),
    ],
    ids=short,
)
def test_a_hostile_env_file_is_one_line_naming_the_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, message: str
) -> None:
    env = tmp_path / "hostile.env"
    env.write_bytes(content)
    code, err = serve(capsys, "--env-file", str(env), "--check-config", "json:app")
    assert (code, err) == (2, f"prefork: error: env file {str(env)!r}{message}")


def test_env_file_lines_end_at_newlines_only(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"A=form\x0cfeed\r\nB=2\n")
    environ: dict[str, str] = {}
    setup.load_env_file(str(env), environ)
    assert environ == {"A": "form\x0cfeed", "B": "2"}


# --- the log config ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000, "is not valid JSON: it nests too deeply"),
        (
            "big.json",
            '{"version": ' + "9" * 5000 + "}",
            f"is not valid JSON: a number has more than {DIGITS} digits",
        ),
        (
            "bad.json",
            "{",
            "is not valid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        ("list.json", "[1]", "must hold an object, not list"),
        ("deep.toml", "x = " + "[" * 5000 + "]" * 5000, "is not valid TOML: it nests too deeply"),
        (
            "garbage.ini",
            "garbage\n",
            "is not valid: MissingSectionHeaderError: File contains no "
            "section headers. file: '{path}', line: 1 'garbage\\n'",
        ),
        ("empty.ini", "", "is not valid: KeyError: 'formatters'"),
        (
            "args.ini",
            "[loggers]\nkeys=root\n[handlers]\nkeys=h\n[formatters]\nkeys=\n"
            "[logger_root]\nhandlers=h\n[handler_h]\nclass=StreamHandler\nargs=(1/0,)\n",
            "is not valid: ZeroDivisionError: division by zero",
        ),
        (
            "handler.json",
            json.dumps({"version": 1, "handlers": {"h": {"class": "no.Such"}}}),
            "is not valid: ValueError: Unable to configure handler 'h'",
        ),
    ],
    ids=short,
)
def test_a_hostile_log_config_is_one_line_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    code, err = serve(capsys, "--log-config", str(path), "--check-config", "json:app")
    expected = message.replace("{path}", str(path))
    assert (code, err) == (2, f"prefork: error: log config {str(path)!r} {expected}")


def test_a_long_log_config_error_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "long.ini"
    path.write_text("x" * 10_000 + "\n")
    with pytest.raises(ConfigError) as info:
        setup.configure_logging("info", str(path), None, None)
    assert str(info.value).startswith(f"log config {str(path)!r} is not valid: Missing")
    assert len(str(info.value)) <= len(f"log config {str(path)!r} is not valid: ") + 200


# --- WEB_CONCURRENCY -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("\u00b2", "WEB_CONCURRENCY must be a whole number, got '\u00b2'"),
        ("1025", "WEB_CONCURRENCY must be at most 1024, got '1025'"),
        ("9" * 5000, "WEB_CONCURRENCY must be at most 1024, got '" + "9" * 56 + "..."),
    ],
    ids=short,
)
def test_web_concurrency_is_a_whole_number_up_to_the_maximum(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        setup.default_workers({"WEB_CONCURRENCY": value})
    assert str(info.value) == message


def test_web_concurrency_may_have_leading_zeros() -> None:
    assert setup.default_workers({"WEB_CONCURRENCY": "0" * 5000 + "3"}) == 3

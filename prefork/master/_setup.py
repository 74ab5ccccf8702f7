"""What ``prefork serve`` does before the master starts: the config file, the environment
file, the working directory, logging, the worker count from the environment, and the
uvicorn-style spellings of ``--bind``. Each bad input is a one-line ``ConfigError``, and no
file is read past ``MAX_FILE_BYTES``.
"""

from __future__ import annotations

import configparser
import datetime
import difflib
import functools
import json
import logging
import logging.config
import os
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from prefork.config import octal
from prefork.core._options import ConfigError, Option, declared, shown, truth
from prefork.core._roster import MAX_WORKERS
from prefork.master import _pyconfig
from prefork.master._logs import LOG_FORMAT

# --- the files it reads --------------------------------------------------------------------

#: The most prefork reads of a config, env or log config file (1 MiB): more than any real
#: one holds, and ``-c /dev/zero`` stops there rather than filling memory.
MAX_FILE_BYTES = 1 << 20


def read_text(path: str, what: str) -> str:
    """The text of the file at ``path``, which must be UTF-8 and at most ``MAX_FILE_BYTES``
    (a device or FIFO is read up to that too). Raises ``ConfigError`` naming ``what`` ("config
    file") and ``path``: it cannot be opened (missing, a directory, no permission), is too large,
    or is not UTF-8 (the line and the byte offset are named)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"{what} {path!r} is larger than {MAX_FILE_BYTES} bytes, the most prefork reads"
        )
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{what} {path!r} line {line} is not UTF-8 (byte {data[exc.start]:#04x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None


def _parse(path: str, what: str, kind: str = "TOML") -> Any:
    """The file at ``path`` parsed as ``kind`` (TOML or JSON); a ``ConfigError`` for anything a
    parser raises on hostile input: bad syntax, nesting past the recursion limit, a huge int."""
    text = read_text(path, what)
    loads: Callable[[str], Any] = json.loads if kind == "JSON" else tomllib.loads
    syntax: type[ValueError] = json.JSONDecodeError if kind == "JSON" else tomllib.TOMLDecodeError
    try:
        return loads(text)
    except syntax as exc:
        reason = str(exc)
    except RecursionError:
        reason = "it nests too deeply"
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        reason = f"a number has more than {sys.get_int_max_str_digits()} digits"
    raise ConfigError(f"{what} {path!r} is not valid {kind}: {reason}")


#: How a refusal names a value from a file, by its TOML type.
_TOML_TYPES: dict[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    list: "an array",
    dict: "a table",
    datetime.date: "a date",
    datetime.time: "a time",
    datetime.datetime: "a date-time",
}


def _kind(value: object) -> str:
    return _TOML_TYPES.get(type(value), type(value).__name__)


# --- the config file ---------------------------------------------------------------------

#: What an option takes from a config file besides a string (parsed as on the command line),
#: by how its flag reads a word, and how a refusal says it.
_TAKES: dict[Callable[[str], Any], tuple[tuple[type, ...], str]] = {
    int: ((int,), "a whole number"),
    octal: ((int,), "a whole number"),
    float: ((int, float), "a number"),
    truth: ((bool,), "true or false"),
}
_TEXT = ((bool, int, float, list), "a string")  # the option's check decides


def default_config_file() -> str | None:
    """./pyproject.toml when it has a [tool.prefork] table, else None. A pyproject.toml that
    cannot be read as TOML is left to the tools it is for."""
    try:
        doc = _parse("pyproject.toml", "config file")
    except ConfigError:
        return None
    tool = doc.get("tool")
    return "pyproject.toml" if isinstance(tool, dict) and "prefork" in tool else None


def read_config_file(path: str, configs: Iterable[type]) -> dict[str, Any]:
    """The options in a TOML file, each checked as its declaration in ``configs`` says,
    keyed by field name (argparse's ``dest``). Raises ``ConfigError`` naming the file.

    Keys are the long flags without their dashes (``workers``, ``keep-alive`` or
    ``keep_alive``, ``app``); a pyproject.toml's are under [tool.prefork]. A ``.py`` file is a
    gunicorn config: its literal settings are read without running it (``_pyconfig``).
    """
    by_key = _keys(configs)
    if path.endswith(".py"):
        wanted = {key: _wanted(meta) for key, (_, meta) in by_key.items()}
        settings = _pyconfig.read(path, read_text(path, "config file"), wanted)
        values: dict[str, Any] = {}
        for name, (line, value) in settings.items():
            dest, meta = by_key[_pyconfig.prefork_key(name)]
            values[dest] = _value(path, f"{name} (line {line})", meta, value)
        return values
    doc = _parse(path, "config file")
    if Path(path).name == "pyproject.toml":
        tool = doc.get("tool", {})
        doc = tool.get("prefork", {}) if isinstance(tool, dict) else tool
        if not isinstance(doc, dict):
            raise ConfigError(
                f"config file {path!r}: [tool.prefork] must be a table, not {_kind(doc)}"
            )
    values = {}
    for key, value in doc.items():
        found = by_key.get(key.replace("_", "-"))
        if found is None:
            close = difflib.get_close_matches(key, list(by_key), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"config file {path!r}: unknown key {shown(key)}{hint}")
        name, meta = found
        values[name] = _value(path, key, meta, value)
    return values


def _keys(configs: Iterable[type]) -> dict[str, tuple[str, Option]]:
    """Config file keys: each option's long flags without dashes, or its positional name."""
    keys: dict[str, tuple[str, Option]] = {}
    for config in configs:
        for f, meta in declared(config):
            for flag in meta.flags:
                if flag.startswith("--") or not flag.startswith("-"):
                    keys[flag.lstrip("-")] = (f.name, meta)
    keys.pop("config", None)
    return keys


def _wanted(meta: Option) -> str:
    """What an option takes in a config file, as a refusal says it."""
    if meta.repeat:
        return "a string or a list of them"
    if meta.parse is None:
        return "true or false"
    return _TAKES.get(meta.parse, _TEXT)[1]


def _value(path: str, key: str, meta: Option, value: Any) -> Any:
    """A value from the file as the flag would give it, refused by type first (TOML has
    dates, tables...), then by the option's own check."""
    where = f"config file {path!r}: {key}"
    if meta.repeat:
        value = [value] if isinstance(value, str) else value
        odd = [v for v in value if not isinstance(v, str)] if isinstance(value, list) else [value]
        if odd:
            raise ConfigError(f"{where} must be a string or a list of them, not {_kind(odd[0])}")
    elif meta.parse is None:  # a switch
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {_kind(value)}")
    elif not isinstance(value, str):
        takes, wanted = _TAKES.get(meta.parse, _TEXT)
        if type(value) not in takes:
            raise ConfigError(f"{where} must be {wanted}, not {_kind(value)}")
    texts = value if isinstance(value, list) else [value]
    if any(isinstance(t, str) and "\x00" in t for t in texts):
        raise ConfigError(f"{where} holds a NUL character; remove it")
    if isinstance(value, str) and meta.parse is not None:
        try:
            value = meta.parse(value)
        except ValueError:
            raise ConfigError(f"{where} = {shown(value)} is not valid") from None
    try:
        meta.check(key, value)
    except ConfigError as exc:
        raise ConfigError(f"config file {path!r}: {exc}") from None
    return value


def dump_options(configs: Iterable[type], values: Mapping[str, Any]) -> str:
    """Every flagged option of ``configs`` and its value in effect, as TOML lines."""
    lines = []
    for config in configs:
        for f, meta in declared(config):
            if not meta.flags or f.name in ("config", "check_config", "print_config"):
                continue
            value = values.get(f.name, f.default)
            key = next((s[2:] for s in meta.flags if s.startswith("--")), f.name)
            if value is None:
                lines.append(f"# {key} is not set")
            else:
                lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


# --- the process set-up ------------------------------------------------------------------


def load_env_file(path: str, environ: MutableMapping[str, str]) -> None:
    """``KEY=VALUE`` lines (``export`` and quotes allowed, ``#`` comments) into ``environ``."""
    text = read_text(path, "env file")
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\x00" in line:
            raise ConfigError(
                f"env file {path!r} line {number}: a NUL byte cannot be in the environment"
            )
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"env file {path!r} line {number}: expected KEY=VALUE")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        environ[key] = value


def change_dir(path: str) -> None:
    try:
        os.chdir(path)
    except OSError as exc:
        raise ConfigError(f"cannot change to directory {path!r}: {exc.strerror}") from None


def default_workers(environ: Mapping[str, str]) -> int:
    """WEB_CONCURRENCY when set (as uvicorn reads it), else the CPUs this process may use."""
    text = environ.get("WEB_CONCURRENCY", "")
    if not text:
        return len(os.sched_getaffinity(0))
    if not text.isascii() or not text.isdigit():
        raise ConfigError(f"WEB_CONCURRENCY must be a whole number, got {shown(text)}")
    digits = text.lstrip("0") or "0"  # int() takes at most 4,300 digits
    if len(digits) > len(str(MAX_WORKERS)) or int(digits) > MAX_WORKERS:
        raise ConfigError(f"WEB_CONCURRENCY must be at most {MAX_WORKERS}, got {shown(text)}")
    return int(digits)


def binds(host: str | None, port: int | None, uds: str | None, fd: int | None) -> list[str]:
    """``--bind`` addresses for uvicorn's ``--host``/``--port``, ``--uds`` and ``--fd``."""
    out = []
    if host is not None or port is not None:
        host = host or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        out.append(f"{host}:{8000 if port is None else port}")
    if uds is not None:
        out.append(f"unix:{uds}")
    if fd is not None:
        out.append(f"fd://{fd}")
    return out


#: uvicorn's most verbose level, below DEBUG (``--log-level trace``).
TRACE = 5


def configure_logging(
    level: str, config: str | None, error_file: str | None, access_file: str | None
) -> None:
    """The log: a dictConfig (JSON or TOML) or fileConfig (.ini) file, or one format at
    ``level`` (a name: ``trace`` is ``TRACE``, below ``debug``) to stderr or ``error_file``;
    access lines to ``access_file`` when given."""
    logging.addLevelName(TRACE, "TRACE")
    if config is not None:
        _apply_log_config(config)
    else:
        handler = _handler(error_file, sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(level.upper())
    if access_file is not None:
        access = logging.getLogger("prefork.access")
        access.addHandler(_handler(access_file, sys.stdout))
        access.setLevel(logging.INFO)
        access.propagate = False


def _handler(path: str | None, dash: Any) -> logging.Handler:
    if path is None or path == "-":
        return logging.StreamHandler(dash)
    try:
        return logging.FileHandler(path)
    except OSError as exc:
        raise ConfigError(f"cannot open log file {path!r}: {exc.strerror}") from None


def _apply_log_config(path: str) -> None:
    configure: Callable[[], None]
    if path.endswith(".ini"):
        configure = functools.partial(_file_config, path, read_text(path, "log config"))
    else:
        doc = _parse(path, "log config", "JSON" if path.endswith(".json") else "TOML")
        if not isinstance(doc, dict):
            raise ConfigError(f"log config {path!r} must hold an object, not {type(doc).__name__}")
        # prefork's own loggers exist by now: unless told otherwise, keep them working.
        doc.setdefault("disable_existing_loggers", False)
        configure = functools.partial(logging.config.dictConfig, doc)
    try:
        configure()
    except Exception as exc:  # fileConfig evaluates args as Python; both build any class named
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ConfigError(f"log config {path!r} is not valid: {reason[:200]}") from None


def _file_config(path: str, text: str) -> None:
    parser = configparser.ConfigParser()
    parser.read_string(text, path)
    logging.config.fileConfig(parser, disable_existing_loggers=False)

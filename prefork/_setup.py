"""What ``prefork serve`` does before the master starts: the config file, the environment
file, the working directory, logging, the worker count from the environment, and the
uvicorn-style spellings of ``--bind``. Each bad input is a one-line ``ConfigError``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import logging.config
import os
import sys
import tomllib
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from prefork._logs import LOG_FORMAT
from prefork._options import ConfigError, declared

# --- the config file ---------------------------------------------------------------------


def default_config_file() -> str | None:
    """./pyproject.toml when it has a [tool.prefork] table, else None."""
    path = Path("pyproject.toml")
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return str(path) if "prefork" in doc.get("tool", {}) else None


def read_config_file(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The options in a TOML file, as defaults for ``parser`` (keyed by argparse ``dest``).

    Keys are the long flags without their dashes (``workers``, ``keep-alive`` or
    ``keep_alive``, ``app``); a pyproject.toml's are under [tool.prefork].
    """
    try:
        doc = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid TOML: {exc}") from None
    if Path(path).name == "pyproject.toml":
        doc = doc.get("tool", {}).get("prefork", {})
    by_key = _keys(parser)
    values: dict[str, Any] = {}
    for key, value in doc.items():
        action = by_key.get(key.replace("_", "-"))
        if action is None:
            close = difflib.get_close_matches(key, list(by_key), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"config file {path!r}: unknown key {key!r}{hint}")
        values[action.dest] = _value(path, key, action, value)
    return values


def _keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    keys: dict[str, argparse.Action] = {}
    for action in parser._actions:
        names = [s.lstrip("-") for s in action.option_strings if s.startswith("--")]
        if not action.option_strings:
            names = [action.dest]  # a positional: APP
        for name in names:
            if name not in ("help", "config"):
                keys[name] = action
    return keys


def _value(path: str, key: str, action: argparse.Action, value: Any) -> Any:
    if isinstance(action, argparse._AppendAction):
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config file {path!r}: {key} must be a string or a list of them")
        return value
    if action.nargs == 0:  # a switch
        if not isinstance(value, bool):
            raise ConfigError(f"config file {path!r}: {key} must be true or false")
        return value
    if isinstance(value, str) and callable(action.type):
        try:
            return action.type(value)
        except ValueError:
            raise ConfigError(f"config file {path!r}: {key} = {value!r} is not valid") from None
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
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path!r}: {exc.strerror}") from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
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
    if not text.isdigit():
        raise ConfigError(f"WEB_CONCURRENCY must be a whole number, got {text!r}")
    return int(text)


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


def configure_logging(
    level: str, config: str | None, error_file: str | None, access_file: str | None
) -> None:
    """The log: a dictConfig (JSON or TOML) or fileConfig (.ini) file, or one format at
    ``level`` to stderr or ``error_file``; access lines to ``access_file`` when given."""
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
    try:
        if path.endswith(".ini"):
            if not Path(path).is_file():
                raise OSError(2, "No such file or directory")
            logging.config.fileConfig(path, disable_existing_loggers=False)
            return
        text = Path(path).read_text()
        doc = json.loads(text) if path.endswith(".json") else tomllib.loads(text)
        # prefork's own loggers exist by now: unless told otherwise, keep them working.
        doc.setdefault("disable_existing_loggers", False)
        logging.config.dictConfig(doc)
    except OSError as exc:
        raise ConfigError(f"cannot read log config {path!r}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSON, TOML, dictConfig
        raise ConfigError(f"log config {path!r} is not valid: {exc}") from None

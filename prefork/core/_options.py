"""One declaration per option: default, check, help and command-line flags in one place.

An option is a field of a frozen config dataclass whose metadata holds an ``Option``
(gunicorn's ``Setting``, without a registry). The config validates itself from it
(``check_fields``), builds itself from keyword options (``build``), and ``cli.py`` turns the
same declarations into argparse arguments, so no default or help text is written twice.

Pure: no I/O. Every bad value raises ``ConfigError`` with one line: what is wrong, what to do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
REQUIRED: Any = dataclasses.MISSING


class ConfigError(ValueError):
    """A bad option. The message is one line: what is wrong and what to do."""


Check = Callable[[str, Any], Any]  # (name, value) -> the value to keep; raises ConfigError

_RELOAD_EXTRA = (
    "--reload watches directories: name them with --reload-dir DIR, and the files with "
    "--reload-include PATTERN"
)
_WORKER_CLASS = (
    "prefork picks the worker from the app (an ASGI app runs on its HTTP worker); no worker "
    "class is needed"
)
#: uvicorn's and gunicorn's flags that ``prefork serve`` does not take, and what to do instead:
#: named here because the closest spelling would mislead (``--reload-engine`` is not
#: ``--reload-exclude``).
#: A gunicorn config file's setting of the same name gets the same answer.
FOREIGN_FLAGS: dict[str, str] = {
    "--reload-engine": "--reload watches with watchfiles (inotify, or polling where it must); "
    "there is no engine to choose",
    **dict.fromkeys(("--reload-extra-file", "--reload-extra-files"), _RELOAD_EXTRA),
    "--pythonpath": "name the directory APP is imported from with --app-dir DIR",
    "-k": _WORKER_CLASS,
    "--worker-class": _WORKER_CLASS,
    "--worker-connections": "--limit-concurrency N bounds the connections of each worker",
    "--loop": "prefork's workers always run on uvloop",
    "-D": "prefork stays in the foreground; run it under systemd, a container or a supervisor",
    "--daemon": "prefork stays in the foreground; run it under systemd, a container or a "
    "supervisor",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Option:
    """How one option is checked and how it appears on the command line."""

    help: str
    check: Check
    flags: tuple[str, ...] = ()  # e.g. ("-w", "--workers"); ("app",) is a positional
    metavar: str | None = None
    parse: Callable[[str], Any] | None = str  # one command-line word -> value; None: a switch
    choices: tuple[str, ...] = ()
    repeat: bool = False  # the flag may be given several times, values collected in a list
    negatable: bool = False  # a switch that also has a --no-... form
    bare: str | None = None  # the value of the flag given alone (``--template``: on)


def option(
    default: Any,
    help: str,
    check: Check,
    *flags: str,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = str,
    choices: tuple[str, ...] = (),
    repeat: bool = False,
    negatable: bool = False,
    bare: str | None = None,
) -> Any:
    """A dataclass field declaring one option (``default=REQUIRED`` for a required one)."""
    meta = Option(help, check, flags, metavar, parse, choices, repeat, negatable, bare)
    return dataclasses.field(default=default, metadata={"option": meta})


def declared(cls: type) -> Iterator[tuple[dataclasses.Field[Any], Option]]:
    """The fields of a config class that are options, with their declarations."""
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("option")
        if meta is not None:
            yield f, meta


def check_fields(config: Any) -> None:
    """Check every option of a (frozen) config instance; keep the normalised values."""
    for f, meta in declared(type(config)):
        value = getattr(config, f.name)
        kept = meta.check(f.name, value)
        if kept is not value:
            object.__setattr__(config, f.name, kept)


def build(cls: Callable[..., T], what: str, options: Mapping[str, Any], **fixed: Any) -> T:
    """``cls(**fixed, **options)``; an unknown name is a ``ConfigError`` that lists the known."""
    known = [f.name for f, _ in declared(cls)]  # type: ignore[arg-type]
    for name in options:
        if name not in known:
            raise ConfigError(f"unknown {what} option {name!r}; known options: {', '.join(known)}")
    return cls(**fixed, **options)


# --- checks: each returns the value to keep ----------------------------------------------

#: The longest time an option may give: a week. More is a slip of the finger, and the master
#: cannot sleep towards a deadline beyond 24.8 days (epoll takes an int of milliseconds).
MAX_SECONDS = 7 * 24 * 3600


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a one-line message."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than int -> str converts
        return "a number too long to print"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def seconds(
    *, positive: bool = False, optional: bool = False, maximum: float = MAX_SECONDS
) -> Check:
    """A finite number of seconds, >= 0 (> 0 with ``positive``) and at most ``maximum``;
    None too with ``optional``."""
    bound = "> 0" if positive else ">= 0"

    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return value
        number = isinstance(value, int | float) and not isinstance(value, bool)
        finite = number and (isinstance(value, int) or math.isfinite(value))
        if not finite or value < 0 or (positive and value == 0):
            raise ConfigError(f"{name} must be a number of seconds {bound}, got {shown(value)}")
        if value > maximum:
            raise ConfigError(f"{name} must be at most {maximum:g} seconds, got {shown(value)}")
        return value

    return check


def whole(minimum: int = 0, maximum: int | None = None, *, optional: bool = False) -> Check:
    """A whole number >= ``minimum`` and, when given, <= ``maximum``; None too with
    ``optional``."""

    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return value
        if not _is_int(value) or value < minimum:
            raise ConfigError(f"{name} must be a whole number >= {minimum}, got {shown(value)}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, got {shown(value)}")
        return value

    return check


def switch(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {shown(value)}")
    return value


def one_of(*choices: str) -> Check:
    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {shown(value)}")
        return value

    return check


def text(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {shown(value)}")
    return value


def maybe_text(name: str, value: Any) -> Any:
    """A string, or None (not given)."""
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {shown(value)}")
    return value


def path_or_none(name: str, value: Any) -> Any:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{name} must be a path string, got {shown(value)}")
    return value


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def truth(word: str) -> bool:
    """A command-line boolean, spelled as uvicorn's flags take them (``--ws-per-message-deflate
    false``)."""
    lowered = word.strip().lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    raise ValueError(f"{word!r} is not true or false")


def thresholds(name: str, value: Any) -> Any:
    """Request counts, each a whole number >= 1 (``--refork-after 50,100,1000``), kept as a
    tuple; one number alone is a list of one."""
    values = (value,) if _is_int(value) else value
    if not isinstance(values, list | tuple) or not all(_is_int(v) and v >= 1 for v in values):
        raise ConfigError(
            f"{name} must be request counts >= 1 (50 or 50,100,1000), got {shown(value)}"
        )
    return tuple(values)


def counts(word: str) -> tuple[int, ...]:
    """``50,100,1000`` from the command line (a word that is not one is a ValueError)."""
    return tuple(int(part) for part in word.split(","))


def strings(name: str, value: Any) -> Any:
    """A list of strings, kept as a tuple; one string alone is a list of one."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a list of strings, got {shown(value)}")
    return tuple(value)

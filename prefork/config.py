"""Options of the master and its brokers: frozen dataclasses, each bad value a clear error.

No I/O here beyond asking the import system whether a worker's module exists.
"""

from __future__ import annotations

import builtins
import importlib.util
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from prefork.worker import Worker

_BROKER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ConfigError(ValueError):
    """A bad option. The message is one line: what is wrong and what to do."""


@dataclass(frozen=True, slots=True)
class MasterConfig:
    """Options of ``Master(**options)``. Times are in seconds."""

    graceful_timeout: float = 30.0
    pidfile: str | None = None
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    backoff_reset: float = 10.0
    max_frame: int = 1 << 20

    def __post_init__(self) -> None:
        _seconds("graceful_timeout", self.graceful_timeout)
        _seconds("backoff_base", self.backoff_base, positive=True)
        _seconds("backoff_cap", self.backoff_cap, positive=True)
        _seconds("backoff_reset", self.backoff_reset)
        if not _is_int(self.max_frame) or self.max_frame < 64:
            raise ConfigError(f"max_frame must be a whole number >= 64, got {self.max_frame!r}")
        if self.pidfile is not None and not isinstance(self.pidfile, str):
            raise ConfigError(f"pidfile must be a path string, got {self.pidfile!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MasterConfig:
        """Build from keyword options; an unknown name is a ``ConfigError`` listing the known."""
        known = [f.name for f in fields(cls)]
        for name in options:
            if name not in known:
                raise ConfigError(
                    f"unknown Master option {name!r}; known options: {', '.join(known)}"
                )
        return cls(**options)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """One worker type: how many, which class, which sockets, and its timeouts."""

    type: str
    worker: builtins.type[Worker] | str
    workers: int = 1
    recycle_rate: float = 0.0
    listen: tuple[str, ...] = ()
    timeout: float = 30.0
    boot_timeout: float = 60.0
    graceful_timeout: float | None = None
    backlog: int = 2048
    preload: bool = False
    worker_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not _BROKER_NAME.match(self.type):
            raise ConfigError(
                f"broker type {self.type!r} must be 1-64 letters, digits, '_', '.' or '-'"
            )
        if not _is_int(self.workers) or self.workers < 0:
            raise ConfigError(f"workers must be a whole number >= 0, got {self.workers!r}")
        _seconds("recycle_rate", self.recycle_rate)
        _seconds("timeout", self.timeout)
        _seconds("boot_timeout", self.boot_timeout, positive=True)
        if self.graceful_timeout is not None:
            _seconds("graceful_timeout", self.graceful_timeout)
        if not _is_int(self.backlog) or self.backlog < 1:
            raise ConfigError(f"backlog must be a whole number >= 1, got {self.backlog!r}")
        if isinstance(self.listen, str) or not all(isinstance(a, str) for a in self.listen):
            raise ConfigError(f"listen must be a list of address strings, got {self.listen!r}")
        check_worker_spec(self.worker)


def check_worker_spec(spec: object) -> None:
    """Raise ``ConfigError`` unless ``spec`` is a Worker subclass or an importable
    ``"module:attr"`` string. The module is located, not imported: it is imported after fork,
    so that a reload picks up new code."""
    if isinstance(spec, type) and issubclass(spec, Worker):
        return
    if not isinstance(spec, str):
        raise ConfigError(f"worker must be a Worker subclass or 'module:attr', got {spec!r}")
    module, _, attr = spec.partition(":")
    if not module or not attr.isidentifier():
        raise ConfigError(f"worker {spec!r} must look like 'package.module:ClassName'")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"worker {spec!r} cannot be imported: {exc}") from None
    if found is None:
        raise ConfigError(
            f"worker {spec!r} cannot be imported: no module named {module!r} "
            "(check the name and sys.path)"
        )


def brokers_unique(brokers: Iterable[BrokerConfig]) -> None:
    seen: set[str] = set()
    for b in brokers:
        if b.type in seen:
            raise ConfigError(f"broker type {b.type!r} is declared twice; give each a new name")
        seen.add(b.type)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seconds(name: str, value: object, *, positive: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):  # type: ignore[operator]
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{name} must be a number of seconds {bound}, got {value!r}")

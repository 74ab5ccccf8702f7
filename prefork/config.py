"""Options of the master and of its brokers, each declared once (see ``_options.py``).

Pure: no I/O. ``Master(**options)`` builds a ``MasterConfig``, ``master.broker(...)`` a
``BrokerConfig``, ``prefork serve`` reads the same declarations for its flags, and
``policy_of`` hands the supervisor what it needs of both.
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prefork.core._options import (
    REQUIRED,
    ConfigError,
    build,
    check_fields,
    counts,
    maybe_text,
    one_of,
    option,
    path_or_none,
    seconds,
    shown,
    strings,
    switch,
    thresholds,
    whole,
)
from prefork.core._roster import MAX_WORKERS, BrokerPolicy
from prefork.core._templates import templates_used

__all__ = [
    "BrokerConfig",
    "MasterConfig",
    "brokers_unique",
    "policy_of",
]

#: The longest listen queue: the kernel caps it at net.core.somaxconn anyway, and listen()
#: takes a C int.
MAX_BACKLOG = 65535
#: The largest --max-worker-memory, in MiB (1 TiB): more is no limit at all.
MAX_WORKER_MEMORY = 1 << 20

_BROKER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_WORKER_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def octal(text: str) -> int:
    """An octal number from the command line (027, 0o027); argparse names it on error."""
    return int(text, 8)


def _control(name: str, value: Any) -> Any:
    """A path, ``auto`` or None; ``off`` is None."""
    if value is None or value == "off":
        return None
    return path_or_none(name, value)


def _umask(name: str, value: Any) -> Any:
    whole(0, optional=True)(name, value)
    if value is not None and value > 0o777:
        raise ConfigError(f"{name} must be at most 0o777 (octal, e.g. 027), got {value:#o}")
    return value


def _side_bind(name: str, value: Any) -> Any:
    """The address of one of the master's own servers (metrics, health): host:port or unix."""
    if value is None:
        return value
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be an address such as 127.0.0.1:9100, got {shown(value)}")
    if value.startswith("fd://"):
        raise ConfigError(f"{name} takes host:port or unix:PATH, not {shown(value)}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterConfig:
    """Options of ``Master(**options)``. Times are in seconds."""

    graceful_timeout: float = option(
        30.0,
        "time a stopping worker gets to finish before SIGKILL",
        seconds(),
        "--graceful-timeout",
        "--timeout-graceful-shutdown",
        metavar="SECONDS",
        parse=float,
    )
    pidfile: str | None = option(
        None, "write the master's pid to FILE", path_or_none, "-p", "--pid", metavar="FILE"
    )
    sigterm: str = option(
        "auto",
        "what SIGTERM does: drain (the master stays, SIGUSR2 resumes), stop (drain, then exit "
        "0), or auto: stop when the master is PID 1 (a container) or runs under systemd, "
        "drain on a host",
        one_of("drain", "stop", "auto"),
        "--sigterm",
        choices=("drain", "stop", "auto"),
    )
    shutdown_delay: float = option(
        0.0,
        "on a stop by SIGTERM, keep serving this long with /readyz saying 503 before draining, "
        "so that load balancers stop sending first",
        seconds(),
        "--shutdown-delay",
        metavar="SECONDS",
        parse=float,
    )
    umask: int | None = option(
        None,
        "umask of the master and its workers, in octal, e.g. 027 (unix sockets honour it)",
        _umask,
        "--umask",
        metavar="MASK",
        parse=octal,
    )
    name: str | None = option(
        None,
        "a name for the processes (what ps and top show, 15 characters at most)",
        maybe_text,
        "-n",
        "--name",
    )
    user: str | None = option(
        None, "run the workers as this user (a name or a uid)", maybe_text, "-u", "--user"
    )
    group: str | None = option(
        None,
        "run the workers in this group (a name or a gid; default: the user's)",
        maybe_text,
        "-g",
        "--group",
    )
    backoff_base: float = option(
        0.5, "first wait of the crash-loop backoff", seconds(positive=True)
    )
    backoff_cap: float = option(
        30.0, "longest wait of the crash-loop backoff", seconds(positive=True)
    )
    backoff_reset: float = option(
        10.0, "uptime (or time without a failure) that ends a crash loop", seconds()
    )
    max_frame: int = option(
        1 << 20, "largest frame a worker may send the master, in bytes", whole(64)
    )
    control: str | None = option(
        None,
        "the control socket for prefork ctl: a path, 'auto' (beside --pid's file, else "
        "$XDG_RUNTIME_DIR/prefork/PID.ctl or /tmp/prefork-UID/PID.ctl) or 'off'",
        _control,
        "--control",
        metavar="PATH",
    )
    metrics_bind: str | None = option(
        None,
        "serve Prometheus metrics on this host:port or unix:PATH (GET /metrics; /livez and "
        "/readyz too)",
        _side_bind,
        "--metrics-bind",
        metavar="ADDR",
    )
    health_bind: str | None = option(
        None,
        "serve the health probes on this host:port or unix:PATH: GET /livez (the master "
        "answers) and /readyz (503 unless every listening broker has a ready worker)",
        _side_bind,
        "--health-bind",
        metavar="ADDR",
    )

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MasterConfig:
        """Build from keyword options; an unknown name is a ``ConfigError`` listing the known."""
        return build(cls, "Master", options)


#: ``--template``: auto, on, off (the default: no templates, see the README).
TEMPLATE_MODES = ("auto", "on", "off")


def _template_mode(name: str, value: Any) -> Any:
    """auto, on or off; True and False (the API's and config files' switch) are on and off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in TEMPLATE_MODES:
        raise ConfigError(
            f"{name} must be auto, on or off (True and False mean on and off), got {shown(value)}"
        )
    return value


def _broker_type(name: str, value: Any) -> Any:
    if not isinstance(value, str) or not _BROKER_NAME.match(value):
        raise ConfigError(f"broker type {value!r} must be 1-64 letters, digits, '_', '.' or '-'")
    return value


def _mebibytes(name: str, value: Any) -> Any:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not (isinstance(value, int) or math.isfinite(value)) or value < 0:
        raise ConfigError(f"{name} must be a number of MiB >= 0 (0: no limit), got {shown(value)}")
    if value > MAX_WORKER_MEMORY:
        raise ConfigError(f"{name} must be at most {MAX_WORKER_MEMORY} MiB, got {shown(value)}")
    return value


def _worker_spec(name: str, value: Any) -> Any:
    """A class (the master checks it is a Worker) or ``"module:attr"`` (imported after fork)."""
    if isinstance(value, type):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"worker must be a Worker subclass or 'module:attr', got {value!r}")
    if not _WORKER_SPEC.match(value):
        raise ConfigError(f"worker {value!r} must look like 'package.module:ClassName'")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    """One worker type: how many, which class, which sockets, and its timeouts.

    Options not declared here are the worker's own (``worker_options``, ``self.options``).
    """

    type: str = option(REQUIRED, "the broker's name", _broker_type)
    worker: builtins.type | str = option(
        REQUIRED, "a Worker subclass or 'module:attr'", _worker_spec
    )
    workers: int = option(
        1,
        f"worker processes, at most {MAX_WORKERS}",
        whole(0, MAX_WORKERS),
        "-w",
        "--workers",
        metavar="N",
        parse=int,
    )
    recycle_rate: float = option(
        0.0,
        "replace each worker after about this long, one at a time (0 = never)",
        seconds(),
        "--recycle",
        metavar="SECONDS",
        parse=float,
    )
    listen: tuple[str, ...] = option(
        (),
        "host:port, [v6]:port, unix:PATH or fd://N; repeatable",
        strings,
        "-b",
        "--bind",
        metavar="ADDR",
        repeat=True,
    )
    timeout: float = option(
        30.0,
        "kill and replace a worker silent this long (0 = off)",
        seconds(),
        "-t",
        "--timeout",
        metavar="SECONDS",
        parse=float,
    )
    boot_timeout: float = option(
        60.0,
        "time a new worker gets to become ready",
        seconds(positive=True),
        "--boot-timeout",
        metavar="SECONDS",
        parse=float,
    )
    graceful_timeout: float | None = option(
        None, "this broker's own graceful_timeout (None: the master's)", seconds(optional=True)
    )
    backlog: int = option(
        2048,
        f"listen queue length, at most {MAX_BACKLOG}",
        whole(1, MAX_BACKLOG),
        "--backlog",
        metavar="N",
        parse=int,
    )
    preload: bool = option(
        False,
        "import the worker (serve: the app) in the master: shares memory, reloads keep old code",
        switch,
        "--preload",
        parse=None,
    )
    template: str = option(
        "off",
        "fork the workers from a template process per generation that imported the code "
        "once: they share its memory and start without importing; a reload starts a new one. "
        "auto: unless --preload, and not for a generation whose import started threads or "
        "opened sockets (its workers import the code themselves); on: always; off: never",
        _template_mode,
        "--template",
        metavar="auto|on|off",
        choices=TEMPLATE_MODES,
        bare="on",
    )
    refork_after: tuple[int, ...] = option(
        (),
        "with --template: once a worker served this many requests, it forks the next template "
        "(its warmed memory is then shared) and the broker rolls onto it; a list (50,100,1000) "
        "gives each next generation the next count, and no refork after the last",
        thresholds,
        "--refork-after",
        metavar="N[,N...]",
        parse=counts,
    )
    max_worker_memory: float = option(
        0.0,
        "replace a worker (rolling) whose resident memory passes this many MiB (0 = no limit)",
        _mebibytes,
        "--max-worker-memory",
        metavar="MB",
        parse=float,
    )
    worker_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.template == "on" and self.preload:
            raise ConfigError(
                "template and preload both share the code's memory; choose template, which "
                "keeps loading new code on reload (--template, not --preload)"
            )
        if self.refork_after and (self.template == "off" or self.preload):
            raise ConfigError(
                "refork_after promotes a worker to the next template: add --template auto "
                "or on (template='auto' or True), without --preload"
            )

    @classmethod
    def from_options(
        cls, type: str, worker: builtins.type | str, options: Mapping[str, Any]
    ) -> BrokerConfig:
        """Split ``options`` into this broker's own and its workers' (the rest)."""
        own = {f: v for f, v in options.items() if f in _BROKER_OPTIONS}
        rest = {f: v for f, v in options.items() if f not in _BROKER_OPTIONS}
        return cls(type=type, worker=worker, worker_options=rest, **own)


_BROKER_OPTIONS = frozenset(
    f for f in BrokerConfig.__dataclass_fields__ if f not in ("type", "worker", "worker_options")
)


def policy_of(
    broker: BrokerConfig, master: MasterConfig, prepares_template: bool = True
) -> BrokerPolicy:
    """What the supervisor needs of one broker, from the declared options
    (``prepares_template``: see ``templates_used``)."""
    template, fallback = templates_used(
        broker.template, broker.preload, bool(broker.refork_after), prepares_template
    )
    graceful = (
        master.graceful_timeout if broker.graceful_timeout is None else broker.graceful_timeout
    )
    return BrokerPolicy(
        name=broker.type,
        workers=broker.workers,
        recycle_rate=broker.recycle_rate,
        timeout=broker.timeout,
        boot_timeout=broker.boot_timeout,
        graceful_timeout=graceful,
        backoff_base=master.backoff_base,
        backoff_cap=master.backoff_cap,
        backoff_reset=master.backoff_reset,
        max_memory=int(broker.max_worker_memory * (1 << 20)),
        template=template,
        template_fallback=fallback,
        refork_after=broker.refork_after,
    )


def brokers_unique(brokers: Iterable[BrokerConfig]) -> None:
    seen: set[str] = set()
    for b in brokers:
        if b.type in seen:
            raise ConfigError(f"broker type {b.type!r} is declared twice; give each a new name")
        seen.add(b.type)

"""The HTTP worker's options: one frozen dataclass, its validation, and the CLI glue.

Every bad value raises ``HTTPConfigError`` with one line saying what is wrong and what to do.
No I/O here: the app is imported later, in the worker, after fork.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

LIFESPAN_MODES = ("auto", "on", "off")


class HTTPConfigError(ValueError):
    """An HTTP option has a value we cannot use; the message says which and what to do."""


def _parse_networks(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise HTTPConfigError(
                    f"forwarded_allow_ips: {item!r} is not an IP address or network; "
                    "use e.g. 127.0.0.1,10.0.0.0/8 or *"
                ) from None
        out.append(item)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class HTTPConfig:
    """Options of one HTTP worker (every worker of a broker shares them).

    ``app`` is ``"module:attr"`` (imported in the worker after fork) or an ASGI callable.
    Timeouts are in seconds; ``body_timeout`` bounds a stalled request body and a client that
    stops reading its response. ``limit_request_body`` is in bytes, 0 for no limit (413).
    Raises ``HTTPConfigError`` on a bad value.
    """

    app: str | Callable[..., Any]
    factory: bool = False
    app_dir: str = "."
    root_path: str = ""
    proxy_headers: bool = False
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    lifespan: str = "auto"
    access_log: bool = False
    keep_alive: float = 5.0
    limit_concurrency: int | None = None
    max_requests: int = 0
    max_requests_jitter: int = 0
    header_timeout: float = 30.0
    body_timeout: float = 60.0
    limit_request_line: int = 8190
    limit_request_fields: int = 100
    limit_request_field_size: int = 8190
    limit_request_head: int = 65536
    limit_request_body: int = 0
    server_header: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.app, str):
            module, sep, attr = self.app.partition(":")
            if not sep or not module.strip() or not attr.strip():
                raise HTTPConfigError(
                    f"app: {self.app!r} is not 'module:attr'; name the app like 'main:app'"
                )
        elif not callable(self.app):
            raise HTTPConfigError("app: must be 'module:attr' or an ASGI callable")
        if self.lifespan not in LIFESPAN_MODES:
            raise HTTPConfigError(
                f"lifespan: {self.lifespan!r} is not one of auto, on, off; pick one of them"
            )
        if self.root_path and (not self.root_path.startswith("/") or self.root_path == "/"):
            raise HTTPConfigError(
                f"root_path: {self.root_path!r} must start with '/' (e.g. /api) or be empty"
            )
        for name in ("keep_alive", "header_timeout", "body_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise HTTPConfigError(f"{name}: {value!r} must be a number of seconds above 0")
        _positive(
            self,
            "limit_request_line",
            "limit_request_fields",
            "limit_request_field_size",
            "limit_request_head",
        )
        _non_negative(self, "max_requests", "max_requests_jitter", "limit_request_body")
        if self.limit_concurrency is not None:
            _positive(self, "limit_concurrency")
        if self.max_requests_jitter and not self.max_requests:
            raise HTTPConfigError(
                "max_requests_jitter: needs max_requests; set --max-requests too or drop it"
            )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> HTTPConfig:
        """Build a config from a worker's options mapping (the broker's keyword options).

        Accepts the field names of this class; ``forwarded_allow_ips`` may be a comma-separated
        string. Raises ``HTTPConfigError`` on an unknown key or a bad value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise HTTPConfigError(
                f"unknown HTTP option {unknown[0]!r}; known options: {', '.join(sorted(known))}"
            )
        if "app" not in options:
            raise HTTPConfigError("app: missing; pass app='module:attr'")
        values = dict(options)
        if "forwarded_allow_ips" in values:
            values["forwarded_allow_ips"] = _parse_networks(values["forwarded_allow_ips"])
        return cls(**values)

    def trusts(self, host: str | None) -> bool:
        """Whether proxy headers from a client at ``host`` are believed.

        Unix-socket peers (``host`` None) are trusted: the socket's permissions decide who
        connects.
        """
        if host is None or "*" in self.forwarded_allow_ips:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(
            address in ipaddress.ip_network(n, strict=False) for n in self.forwarded_allow_ips
        )


def _positive(config: HTTPConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HTTPConfigError(f"{name}: {value!r} must be a whole number of 1 or more")


def _non_negative(config: HTTPConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise HTTPConfigError(f"{name}: {value!r} must be a whole number of 0 or more")


# ---------------------------------------------------------------------------------------------
# Command line: `prefork serve` (the CLI module adds the master's options itself)

_ARG_TO_OPTION = {
    "app": "app",
    "factory": "factory",
    "app_dir": "app_dir",
    "keep_alive": "keep_alive",
    "limit_concurrency": "limit_concurrency",
    "max_requests": "max_requests",
    "max_requests_jitter": "max_requests_jitter",
    "root_path": "root_path",
    "proxy_headers": "proxy_headers",
    "forwarded_allow_ips": "forwarded_allow_ips",
    "lifespan": "lifespan",
    "access_log": "access_log",
    "header_timeout": "header_timeout",
    "body_timeout": "body_timeout",
    "limit_request_body": "limit_request_body",
}


class _Defaults:
    """HTTPConfig's field defaults as attributes (a slotted class hides them)."""

    def __getattr__(self, name: str) -> Any:
        return {f.name: f.default for f in fields(HTTPConfig)}[name]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the APP positional and every HTTP-side option of ``prefork serve`` to ``parser``."""
    d = _Defaults()
    parser.add_argument("app", metavar="APP", help="the ASGI app as module:attr, e.g. main:app")
    parser.add_argument(
        "--factory", action="store_true", help="APP is a callable returning the ASGI app"
    )
    parser.add_argument(
        "--app-dir", default=d.app_dir, help="directory added to sys.path to import APP"
    )
    parser.add_argument(
        "--keep-alive",
        type=float,
        default=d.keep_alive,
        metavar="SECONDS",
        help="close idle keep-alive connections after this long (default %(default)s)",
    )
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=None,
        metavar="N",
        help="per worker, answer 503 beyond N connections or requests in flight",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=0,
        metavar="N",
        help="replace a worker after N requests (rolling, 0 = never)",
    )
    parser.add_argument(
        "--max-requests-jitter",
        type=int,
        default=0,
        metavar="N",
        help="add a random 0..N to --max-requests per worker",
    )
    parser.add_argument(
        "--root-path", default="", help="ASGI root_path, for an app mounted below a prefix"
    )
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-For/-Proto from --forwarded-allow-ips",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        metavar="IPS",
        help="comma-separated proxy IPs or networks to trust, or * (default %(default)s)",
    )
    parser.add_argument(
        "--lifespan",
        choices=LIFESPAN_MODES,
        default=d.lifespan,
        help="ASGI lifespan: auto (if the app supports it), on, off (default %(default)s)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=d.access_log,
        help="log one line per request to the prefork.access logger",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=d.header_timeout,
        metavar="SECONDS",
        help="close a connection whose request head takes longer (default %(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=d.body_timeout,
        metavar="SECONDS",
        help="close a connection whose body stalls this long, either way (default %(default)s)",
    )
    parser.add_argument(
        "--limit-request-body",
        type=int,
        default=d.limit_request_body,
        metavar="BYTES",
        help="answer 413 to a request body over BYTES (default 0 = no limit)",
    )


def worker_options_from_args(ns: argparse.Namespace) -> dict[str, Any]:
    """Return the HTTPWorker options for parsed ``prefork serve`` arguments.

    Reads the attributes ``add_serve_arguments`` defines (and ``backlog`` when present).
    Raises ``HTTPConfigError`` when a value is unusable.
    """
    options = {
        option: getattr(ns, attr) for attr, option in _ARG_TO_OPTION.items() if hasattr(ns, attr)
    }
    if options.get("limit_concurrency") is None:
        options.pop("limit_concurrency", None)
    HTTPConfig.from_options(options)
    if "forwarded_allow_ips" in options:
        options["forwarded_allow_ips"] = ",".join(_parse_networks(options["forwarded_allow_ips"]))
    return options

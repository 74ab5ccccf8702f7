"""The access log line, with gunicorn's atoms (``--access-logformat``), and the debug line of a
refused request.

Only built when access logging is on: one ``%``-format over an object that computes each atom
when the format asks for it (``%`` needs only ``__getitem__``). The time a request took is
measured on ``time.perf_counter`` (uvloop's ``loop.time()`` is rounded to the millisecond), so
``%(L)s`` has gunicorn's microseconds.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Protocol

access_logger = logging.getLogger("prefork.access")
http_logger = logging.getLogger("prefork.http")

#: Client, date, request line, status, body bytes, seconds taken.
DEFAULT_ACCESS_FORMAT = '%(h)s - - %(t)s "%(r)s" %(s)s %(b)s %(L)s'

_ATOMS = frozenset("hlutrmUqHsBbfaTDMLp")


class Answered(Protocol):
    """What a line is made of: a ``Cycle``, or a WebSocket ``Handshake``."""

    scope: dict[str, Any]
    status: int
    sent: int
    start: dict[str, Any] | None


def _known(key: str) -> bool:
    if len(key) > 2 and key[0] == "{" and key[-2:] in ("}i", "}o", "}e"):
        return True
    return key in _ATOMS


class AtomProbe:
    """Answers every atom with ``-`` and refuses unknown ones: checks a format up front."""

    def __getitem__(self, key: str) -> str:
        if not _known(key):
            raise KeyError(f"unknown atom %({key})s")
        return "-"


class Atoms:
    """gunicorn's atoms for one finished request: h client, l and u ``-``, t date, r request
    line, m method, U path, q query, H protocol, s status, B and b body bytes (b: ``-`` for
    none), f referer, a user agent, T/M/D/L time taken in s/ms/us/decimal s, p pid,
    ``{name}i`` a request header, ``{name}o`` a response header, ``{name}e`` the
    environment."""

    def __init__(self, cycle: Answered, taken: float) -> None:
        self._cycle = cycle
        self._taken = max(0.0, taken)

    def __getitem__(self, key: str) -> str:
        scope = self._cycle.scope
        match key:
            case "h":
                client = scope["client"]
                return client[0] if client else "-"
            case "l" | "u":
                return "-"
            case "t":
                return time.strftime("[%d/%b/%Y:%H:%M:%S %z]")
            case "r":
                method = scope.get("method", "GET")  # a WebSocket handshake is a GET
                return f"{method} {self._target()} HTTP/{scope['http_version']}"
            case "m":
                return str(scope.get("method", "GET"))
            case "U":
                return str(scope["path"])
            case "q":
                return bytes(scope["query_string"]).decode("latin-1")
            case "H":
                return f"HTTP/{scope['http_version']}"
            case "s":
                return str(self._cycle.status)
            case "B":
                return str(self._cycle.sent)
            case "b":
                return str(self._cycle.sent) if self._cycle.sent else "-"
            case "f":
                return self._header(scope["headers"], b"referer")
            case "a":
                return self._header(scope["headers"], b"user-agent")
            case "T":
                return str(int(self._taken))
            case "M":
                return str(int(self._taken * 1000))
            case "D":
                return str(int(self._taken * 1_000_000))
            case "L":
                return f"{self._taken:.6f}"
            case "p":
                return f"<{os.getpid()}>"
        return self._braced(key)

    def _braced(self, key: str) -> str:
        # ``{name}i``, ``{name}o`` or ``{name}e``: HTTPConfig checked the format (AtomProbe).
        name, kind = key[1:-2], key[-1]
        if kind == "e":
            return os.environ.get(name, "-")
        if kind == "i":
            headers: Any = self._cycle.scope["headers"]
        else:
            start = self._cycle.start or {}
            headers = start.get("headers", ())
        return self._header(headers, name.lower().encode("latin-1"))

    @staticmethod
    def _header(headers: Any, name: bytes) -> str:
        for key, value in headers:
            if bytes(key).lower() == name:
                return bytes(value).decode("latin-1")
        return "-"

    def _target(self) -> str:
        scope = self._cycle.scope
        target = bytes(scope["raw_path"]).decode("latin-1")
        if scope["query_string"]:
            target += "?" + bytes(scope["query_string"]).decode("latin-1")
        return target


def log_access(cycle: Answered, fmt: str, taken: float) -> None:
    """One access-log line for a request that took ``taken`` seconds (only called when
    access logging is on)."""
    access_logger.info("%s", fmt % Atoms(cycle, taken))


class Handshake:
    """A WebSocket handshake's answer, logged like a request (no body bytes)."""

    def __init__(self, scope: dict[str, Any], status: int) -> None:
        self.scope = scope
        self.status = status
        self.sent = 0
        self.start: dict[str, Any] | None = None


def log_refusal(client: tuple[str, int] | None, status: int, reason: bytes) -> None:
    """A request refused (a 4xx from the parser or the limits, a 503...) at DEBUG on
    ``prefork.http``: who sent it, the status, why. Nothing is formatted unless DEBUG is on."""
    if http_logger.isEnabledFor(logging.DEBUG):
        if client is None:
            peer = "a unix socket"
        else:
            host, port = client
            peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        why = reason.decode("latin-1").strip() or "-"
        http_logger.debug("refused a request from %s: %d %s", peer, status, why)

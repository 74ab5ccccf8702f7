"""The control socket's protocol, version 1: one JSON object per line each way (README,
"prefork ctl"). Pure: requests are parsed and checked here, answers built here; the master
(``_console.py``) performs them.

A request names a command and, for most, a broker (none: every broker)::

    {"v": 1, "cmd": "status"}
    {"v": 1, "cmd": "reload", "broker": "http", "wait": true}
    {"v": 1, "cmd": "scale", "broker": "http", "workers": 3}
    {"v": 1, "cmd": "upgrade", "wait": true}

and gets one answer line: ``{"v": 1, "ok": true, ...}`` or ``{"v": 1, "ok": false, "error":
"..."}``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from prefork.core._events import (
    DrainRequested,
    Event,
    ReloadRequested,
    ResumeRequested,
    ScaleRequested,
    StopRequested,
)
from prefork.core._frames import load_json
from prefork.core._options import shown
from prefork.core._payloads import BrokerStatus
from prefork.core._roster import MAX_WORKERS

VERSION = 1
COMMANDS = ("status", "reload", "drain", "resume", "scale", "stop", "upgrade")


class ProtocolError(ValueError):
    """A request the master cannot take; the message is the answer's one-line ``error``."""


@dataclass(frozen=True, slots=True)
class Request:
    cmd: str
    broker: str | None = None  # None: every broker
    wait: bool = False  # reload, upgrade: answer once the reload has finished
    workers: int = 0  # scale: the new desired count


def parse(line: bytes, brokers: Collection[str]) -> Request:
    """The request on one line; raises ``ProtocolError`` saying what is wrong with it."""
    try:
        obj = load_json(line)
    except ValueError as exc:
        raise ProtocolError(f"a request is one JSON object per line ({exc})") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a request is one JSON object per line")
    version = obj.get("v")
    if version != VERSION:
        raise ProtocolError(
            f"protocol version {version!r} is not supported; this master speaks {VERSION}"
        )
    cmd = obj.get("cmd")
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
    broker = obj.get("broker")
    if broker is not None and broker not in brokers:
        known = ", ".join(brokers)
        raise ProtocolError(f"no broker named {broker!r}; brokers: {known}")
    if cmd == "scale":
        return _scale(obj, broker, brokers)
    if cmd == "upgrade" and broker is not None:
        raise ProtocolError("upgrade takes no broker: the whole master is upgraded")
    return Request(cmd, broker, wait=obj.get("wait") is True)


def _scale(obj: Mapping[str, Any], broker: str | None, brokers: Collection[str]) -> Request:
    if broker is None:
        if len(brokers) != 1:
            raise ProtocolError("scale needs a broker: " + ", ".join(brokers))
        (broker,) = brokers
    workers = obj.get("workers")
    if not isinstance(workers, int) or isinstance(workers, bool) or not 0 <= workers <= MAX_WORKERS:
        raise ProtocolError(
            f"scale needs workers, a whole number from 0 to {MAX_WORKERS}, got {shown(workers)}"
        )
    return Request("scale", broker, workers=workers)


def event_for(request: Request) -> Event | None:
    """The supervisor event a command posts (None for ``status``, which only reads, and
    ``upgrade``, which the master performs itself)."""
    match request.cmd:
        case "reload":
            return ReloadRequested(request.broker)
        case "drain":
            return DrainRequested(request.broker)
        case "resume":
            return ResumeRequested(request.broker)
        case "scale":
            return ScaleRequested(request.broker, workers=request.workers)
        case "stop":
            return StopRequested()
    return None


def answer(**fields: Any) -> bytes:
    """An ``ok`` answer line carrying ``fields``."""
    return _line({"v": VERSION, "ok": True, **fields})


def refusal(error: str, **fields: Any) -> bytes:
    """A failed answer line: ``error`` says what went wrong, in one line."""
    return _line({"v": VERSION, "ok": False, "error": error, **fields})


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


@dataclass(slots=True)
class ReloadWait:
    """A ``reload --wait`` being waited for: the generation of each broker when it was asked.
    ``extra``: more fields of the answer (``upgrade --wait``: what the upgrade did)."""

    since: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, status: Mapping[str, BrokerStatus], broker: str | None, **extra: Any) -> ReloadWait:
        names = list(status) if broker is None else [broker]
        return cls({name: status[name]["generation"] for name in names}, extra)

    def settle(self, status: Mapping[str, BrokerStatus]) -> bytes | None:
        """The answer once every broker's reload has finished (None while one runs). Read
        after the request was handled: a reload that did not start (the broker drains, the
        master stops) fails at once."""
        reloads, failed = [], []
        for name, since in self.since.items():
            last = status[name]["last_reload"]
            if last is None or last["generation"] <= since:
                why = "it is draining" if status[name]["draining"] else "the master is stopping"
                failed.append(f"the reload of {name} did not start: {why}")
                continue
            if last["result"] == "running":
                return None
            reloads.append(
                {
                    "broker": name,
                    "generation": last["generation"],
                    "result": last["result"],
                    "reason": last["reason"],
                    "replaced": last["replaced"],
                    "duration": round(last["duration"], 3),
                }
            )
            if last["result"] == "failed":
                failed.append(f"the reload of {name} was rolled back: {last['reason']}")
        if failed:
            return refusal("; ".join(failed), reloads=reloads, **self.extra)
        return answer(reloads=reloads, **self.extra)

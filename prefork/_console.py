"""What the master tells an operator and takes from one: the status snapshot, the metrics
aggregated from every worker's reports (totals that outlive workers), the control socket
(``prefork ctl``) and the metrics endpoint (``--metrics-bind``).

The master hands it the actions it performs (``observe``), so counters follow what the
supervisor decided; the status comes from the supervisor with what only the master knows
filled in: what each worker last reported, and its resident memory.
"""

from __future__ import annotations

import functools
import logging
import os
import selectors
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from prefork import _control_path, _events, _process, _sockets
from prefork import _control_protocol as protocol
from prefork._broker import BrokerStatus, ReloadResult, WorkerExit, WorkerInfo
from prefork._control import ControlServer
from prefork._control import bind as control_bind
from prefork._events import Action, Event
from prefork._metrics import MetricStore
from prefork._metrics_http import MetricsEndpoint
from prefork._options import ConfigError
from prefork._side import Peer, SideServer
from prefork.config import MasterConfig

log = logging.getLogger("prefork.master")

#: Bounds (seconds) of the reload duration histogram.
RELOAD_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_HELP = {
    "prefork_worker_starts_total": "Workers started.",
    "prefork_worker_exits_total": "Workers that left because the master asked, by cause.",
    "prefork_worker_crashes_total": "Workers that left unasked, by cause.",
    "prefork_reloads_total": "Rolling reloads finished, by result (done, failed).",
    "prefork_reload_duration_seconds": "How long rolling reloads took.",
    "prefork_workers": "Workers by state.",
    "prefork_workers_desired": "The desired number of workers.",
    "prefork_worker_resident_memory_bytes": "Resident memory of the live workers, summed.",
    "prefork_listen_queue": "Connections waiting in a TCP listener's accept queue.",
    "prefork_listen_queue_max": "The most connections a TCP listener's accept queue holds.",
}
StatusSource = Callable[[float], dict[str, BrokerStatus]]
Labels = tuple[tuple[str, str], ...]


class Console:
    """The status, the metrics, the control socket and the metrics endpoint of one master."""

    def __init__(self, config: MasterConfig, post: Callable[[Event], None]) -> None:
        self._config = config
        self._post = post
        self.metrics = MetricStore()
        self._reported: dict[int, tuple[int | None, int | None]] = {}  # requests, connections
        self._refusals: dict[int, str] = {}  # the last metric refusal logged, per worker
        self._control: ControlServer | None = None
        self._endpoint: MetricsEndpoint | None = None
        self._waits: list[tuple[Peer, protocol.ReloadWait]] = []
        self._started = time.monotonic()
        self._status: StatusSource = lambda now: {}
        self._sockets: Mapping[str, list[socket.socket]] = {}
        self.control_path = ""

    # -- set-up and tear-down ----------------------------------------------------------------

    def open(
        self,
        selector: selectors.BaseSelector,
        status: StatusSource,
        sockets: Mapping[str, list[socket.socket]],
    ) -> None:
        """Bind the control socket and the metrics endpoint (``ConfigError`` if one cannot
        be), on ``selector``."""
        self._status, self._sockets = status, sockets
        path = self._config.control
        if path == "auto":
            pidfile, uid = self._config.pidfile, os.getuid()
            path = _control_path.default_path(pidfile, os.environ, uid, os.getpid())
            if pidfile is None:  # ours to make: private (beside a pid file, the 0600 mode is)
                _control_path.ensure_private_dir(_control_path.runtime_dir(os.environ, uid), uid)
        if path is not None:
            listener = _named("the control socket", control_bind, path)
            self._control = ControlServer(listener, selector, self._handle, list(sockets))
            self.control_path = path
        if self._config.metrics_bind is not None:
            bind = functools.partial(_sockets.bind, backlog=64)
            listener = _named("the metrics endpoint", bind, self._config.metrics_bind)
            self._endpoint = MetricsEndpoint(listener, selector, self.render_metrics)

    def describe(self) -> str:
        """Where an operator reaches this master, for its first log line."""
        parts = []
        if self._control is not None:
            parts.append(f"control {self.control_path}")
        if self._endpoint is not None:
            parts.append(f"metrics {self._metrics_url()}")
        return "; ".join(parts)

    def fds(self) -> list[int]:
        """Every fd of the servers (a forked worker closes them)."""
        return [fd for server in self._servers() for fd in server.fds()]

    def close(self) -> None:
        for server in self._servers():
            server.close()
        self._control = self._endpoint = None

    def _servers(self) -> list[SideServer]:
        return [s for s in (self._control, self._endpoint) if s is not None]

    # -- the loop's side ---------------------------------------------------------------------

    def deadline(self) -> float | None:
        times = [d for s in self._servers() if (d := s.deadline()) is not None]
        return min(times, default=None)

    def expire(self, now: float) -> None:
        for server in self._servers():
            server.expire(now)

    def settle(self) -> None:
        """Answer each ``reload --wait`` whose reloads have finished."""
        if not self._waits or self._control is None:
            return
        status = self._status(time.monotonic())
        for wait in list(self._waits):
            peer, reload = wait
            reply = reload.settle(status)
            if reply is not None:
                self._waits.remove(wait)
                self._control.answer(peer, reply)

    def _handle(self, peer: Peer, request: protocol.Request) -> bytes | None:
        if request.cmd == "status":
            return protocol.answer(status=self.snapshot())
        event = protocol.event_for(request)
        assert event is not None
        if request.cmd == "reload" and request.wait:
            wait = protocol.ReloadWait.of(self._status(time.monotonic()), request.broker)
            self._waits.append((peer, wait))
            self._post(event)
            return None
        self._post(event)
        return protocol.answer()

    # -- status ------------------------------------------------------------------------------

    def fill(
        self, status: dict[str, BrokerStatus], pids: Mapping[int, int]
    ) -> dict[str, BrokerStatus]:
        """``status`` with each worker's reported requests and connections and its RSS."""
        for broker in status.values():
            for row in broker["workers"]:
                row["requests"], row["connections"] = self._reported.get(row["id"], (None, None))
                pid = pids.get(row["id"])
                row["rss"] = None if pid is None else _process.rss(pid)
        return status

    def snapshot(self) -> dict[str, Any]:
        """The ``status`` answer of the control socket (README, "prefork ctl")."""
        now = time.monotonic()
        brokers = {}
        for name, broker in self._status(now).items():
            doc: dict[str, Any] = dict(broker)
            del doc["backoff_until"]  # the master's own clock: meaningless elsewhere
            brokers[name] = doc
        return {
            "pid": os.getpid(),
            "uptime": round(now - self._started, 3),
            "control": self.control_path or None,
            "metrics": self._metrics_url() if self._endpoint is not None else None,
            "brokers": brokers,
        }

    def _metrics_url(self) -> str:
        assert self._endpoint is not None
        return _sockets.describe(self._endpoint.listener, "http") + "/metrics"

    # -- metrics -----------------------------------------------------------------------------

    def observe(self, action: Action) -> None:
        """Count what the master does: workers started, exits, crashes, reloads, reports."""
        match action:
            case _events.Spawn(broker=broker):
                self._inc("prefork_worker_starts_total", broker=broker)
            case _events.Emit(event="worker_exit" | "worker_crash", args=(WorkerExit() as x,)):
                kind = "exits" if action.event == "worker_exit" else "crashes"
                self._inc(f"prefork_worker_{kind}_total", broker=x.type, cause=x.cause)
                self.metrics.forget(x.id)
                self._reported.pop(x.id, None)
                self._refusals.pop(x.id, None)
            case _events.Emit(event="reload_done" | "reload_failed", args=(ReloadResult() as r,)):
                result = "done" if action.event == "reload_done" else "failed"
                self._inc("prefork_reloads_total", broker=r.type, result=result)
                name = "prefork_reload_duration_seconds"
                self.metrics.observe(
                    name, {"broker": r.type}, r.duration, RELOAD_BUCKETS, _HELP[name]
                )
            case _events.Emit(event="worker_report", args=(body, WorkerInfo() as info)):
                self._take_report(body, info)

    def _inc(self, name: str, **labels: str) -> None:
        self.metrics.inc(name, labels, 1.0, _HELP[name])

    def _take_report(self, body: Any, info: WorkerInfo) -> None:
        """A worker's report: its ``status`` and ``metrics`` (README, "Metrics")."""
        if not isinstance(body, dict):
            return
        status = body.get("status")
        if isinstance(status, dict):
            self._reported[info.id] = (
                _count(status.get("requests")),
                _count(status.get("connections")),
            )
        if "metrics" in body:
            refused = self.metrics.report(info.type, info.id, body["metrics"])
            if refused and refused[0] != self._refusals.get(info.id):
                self._refusals[info.id] = refused[0]  # logged once, not once a second
                log.warning(
                    "[%s] worker %d reported metrics the master refuses: %s",
                    info.type,
                    info.id,
                    refused[0],
                )

    def render_metrics(self) -> str:
        """The exposition, with the gauges read now (workers, memory, listen queues)."""
        status = self._status(time.monotonic())
        workers: dict[Labels, float] = {}
        desired: dict[Labels, float] = {}
        memory: dict[Labels, float] = {}
        queued: dict[Labels, float] = {}
        most: dict[Labels, float] = {}
        for name, broker in status.items():
            key = (("broker", name),)
            desired[key] = float(broker["desired"])
            memory[key] = 0.0
            for row in broker["workers"]:
                state = (("broker", name), ("state", row["state"]))
                workers[state] = workers.get(state, 0.0) + 1
                memory[key] += row["rss"] or 0
            for sock in self._sockets.get(name, []):
                queue = _sockets.listen_queue(sock)
                if queue is not None:
                    where = (("address", _sockets.describe(sock)), ("broker", name))
                    queued[where], most[where] = float(queue[0]), float(queue[1])
        for family, values in (
            ("prefork_workers", workers),
            ("prefork_workers_desired", desired),
            ("prefork_worker_resident_memory_bytes", memory),
            ("prefork_listen_queue", queued),
            ("prefork_listen_queue_max", most),
        ):
            self.metrics.set_gauges(family, _HELP[family], values)
        return self.metrics.render()


def _named(what: str, bind: Callable[[str], socket.socket], where: str) -> socket.socket:
    """``bind(where)``, its ``ConfigError`` saying which socket it was about."""
    try:
        return bind(where)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _count(value: Any) -> int | None:
    """A reported count: a whole number >= 0, else unknown."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None

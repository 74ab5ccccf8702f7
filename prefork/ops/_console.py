"""What the master tells an operator and takes from one: the status snapshot, the metrics
aggregated from every worker's reports (totals that outlive workers), the control socket
(``prefork ctl``) and the metrics endpoint (``--metrics-bind``).

The master hands it the actions it performs (``observe``), so counters follow what the
supervisor decided; the counting itself is pure (``_accounts.py``). The status comes from the
supervisor with what only the master knows filled in: what each worker last reported, and its
resident memory (read from ``/proc`` for a snapshot or a scrape, never per loop turn).
"""

from __future__ import annotations

import logging
import os
import platform
import selectors
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prefork.config import MasterConfig
from prefork.core._events import Action, Event
from prefork.core._options import ConfigError
from prefork.core._payloads import BrokerStatus
from prefork.core._version import VERSION
from prefork.ops import _control_path
from prefork.ops import _control_protocol as protocol
from prefork.ops._accounts import Accounts, Labels, ProcessUsage
from prefork.ops._control import ControlServer
from prefork.ops._health import readiness
from prefork.ops._metrics_http import HealthEndpoint, MetricsEndpoint
from prefork.ops._side import Peer, SideServer

log = logging.getLogger("prefork.master")
StatusSource = Callable[[float], dict[str, BrokerStatus]]


@dataclass(frozen=True, slots=True)
class Host:
    """What the console needs of the operating system, which the master's modules do: passed
    in, so that the console does not import the master (the master holds the console)."""

    bind: Callable[[str, int], socket.socket]  # an address and its backlog: ConfigError
    bind_private: Callable[[str], socket.socket]  # a unix socket, 0600 from the start
    describe: Callable[[socket.socket, str], str]  # a listener's address (a URL with a scheme)
    listen_queue: Callable[[socket.socket], tuple[int, int] | None]  # waiting, most
    rss: Callable[[int], int | None]  # a process's resident memory in bytes
    usage: Callable[[], ProcessUsage | None]  # the master's own process


class Console:
    """The status, the metrics, the control socket and the metrics endpoint of one master."""

    def __init__(
        self,
        config: MasterConfig,
        post: Callable[[Event], None],
        host: Host,
    ) -> None:
        self._config = config
        self._post = post
        self._host = host
        self.accounts = Accounts()
        self.accounts.read_build(VERSION, platform.python_version())
        self._control: ControlServer | None = None
        self._endpoint: MetricsEndpoint | None = None
        self._health: HealthEndpoint | None = None
        self._waits: list[tuple[Peer, protocol.ReloadWait]] = []
        self._started = time.monotonic()
        self._status: StatusSource = lambda now: {}
        self._pids: Mapping[int, int] = {}
        self._sockets: Mapping[str, list[socket.socket]] = {}
        self._phase: Callable[[], str] = lambda: "serving"
        self.control_path = ""

    # -- set-up and tear-down ----------------------------------------------------------------

    def open(
        self,
        selector: selectors.BaseSelector,
        status: StatusSource,
        sockets: Mapping[str, list[socket.socket]],
        pids: Mapping[int, int] | None = None,
        phase: Callable[[], str] | None = None,
    ) -> None:
        """Bind the control socket, the metrics and the health endpoints (``ConfigError`` if
        one cannot be), on ``selector``. ``status`` is the supervisor's (cheap: a reload wait
        reads it every loop turn); ``pids`` the live workers' (their memory is read for a
        snapshot); ``phase`` the master's (``Ledger.phase``: serving, shutting down,
        stopping), which ``/readyz`` tells."""
        self._status, self._sockets = status, sockets
        self._pids = {} if pids is None else pids  # the live mapping, filled as workers start
        if phase is not None:
            self._phase = phase
        path = self._config.control
        if path == "auto":
            pidfile, uid = self._config.pidfile, os.getuid()
            path = _control_path.default_path(pidfile, os.environ, uid, os.getpid())
            if pidfile is None:  # ours to make: private (beside a pid file, the 0600 mode is)
                _control_path.ensure_private_dir(_control_path.runtime_dir(os.environ, uid), uid)
        if path is not None:
            listener = _named("the control socket", self._host.bind_private, path)
            self._control = ControlServer(listener, selector, self._handle, list(sockets))
            self.control_path = path
        if self._config.metrics_bind is not None:
            where = self._config.metrics_bind
            listener = _named("the metrics endpoint", lambda at: self._host.bind(at, 64), where)
            self._endpoint = MetricsEndpoint(listener, selector, self.render_metrics, self.ready)
        if self._config.health_bind is not None:
            where = self._config.health_bind
            listener = _named("the health endpoint", lambda at: self._host.bind(at, 64), where)
            self._health = HealthEndpoint(listener, selector, self.ready)

    def describe(self) -> str:
        """Where an operator reaches this master, for its first log line."""
        parts = []
        if self._control is not None:
            parts.append(f"control {self.control_path}")
        if self._endpoint is not None:
            parts.append(f"metrics {self._metrics_url()}")
        if self._health is not None:
            parts.append(f"health {self._host.describe(self._health.listener, 'http')}/readyz")
        return "; ".join(parts)

    def fds(self) -> list[int]:
        """Every fd of the servers (a forked worker closes them)."""
        return [fd for server in self._servers() for fd in server.fds()]

    def close(self) -> None:
        for server in self._servers():
            server.close()
        self._control = self._endpoint = self._health = None

    def _servers(self) -> list[SideServer]:
        return [s for s in (self._control, self._endpoint, self._health) if s is not None]

    def ready(self) -> dict[str, str]:
        """Why each listening broker cannot take traffic now (``/readyz``); empty: ready."""
        listening = [name for name, socks in self._sockets.items() if socks]
        return readiness(self._phase(), self._status(time.monotonic()), listening)

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
        for broker in self.accounts.fill_reports(status).values():
            for row in broker["workers"]:
                pid = pids.get(row["id"])
                row["rss"] = None if pid is None else self._host.rss(pid)
        return status

    def _filled(self, now: float) -> dict[str, BrokerStatus]:
        return self.fill(self._status(now), self._pids)

    def snapshot(self) -> dict[str, Any]:
        """The ``status`` answer of the control socket (README, "prefork ctl")."""
        now = time.monotonic()
        brokers = {}
        for name, broker in self._filled(now).items():
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
        return self._host.describe(self._endpoint.listener, "http") + "/metrics"

    # -- metrics -----------------------------------------------------------------------------

    def observe(self, action: Action) -> None:
        """Count what the master does: workers started, exits, crashes, reloads, reports."""
        line = self.accounts.observe(action)
        if line:
            log.warning("%s", line)

    def render_metrics(self) -> Iterator[str]:
        """The exposition, with the gauges read now (workers, memory, listen queues, the
        master's own process), in pieces made as they are taken."""
        queues: dict[Labels, tuple[int, int]] = {}
        for name, socks in self._sockets.items():
            for sock in socks:
                queue = self._host.listen_queue(sock)
                if queue is not None:
                    queues[(("address", self._host.describe(sock, "")), ("broker", name))] = queue
        self.accounts.read_gauges(self._filled(time.monotonic()), queues)
        self.accounts.read_process(self._host.usage())
        return self.accounts.metrics.pieces()


def _named(what: str, bind: Callable[[str], socket.socket], where: str) -> socket.socket:
    """``bind(where)``, its ``ConfigError`` saying which socket it was about."""
    try:
        return bind(where)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None

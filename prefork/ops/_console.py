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
from prefork.ops._side import Peer, SideServer, adopted

log = logging.getLogger("prefork.master")
StatusSource = Callable[[float], dict[str, BrokerStatus]]
UPGRADES = "prefork_master_upgrades_total"
UPGRADES_HELP = "In-place upgrades of the master (prefork ctl upgrade)."
UNDER_WAY = "an upgrade is under way already"


@dataclass(frozen=True, slots=True)
class Upgrading:
    """The ``upgrade`` request being performed: who asked, whether it waits for the reload
    that follows, and when it asked (monotonic)."""

    peer: Peer
    wait: bool
    asked: float


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
        self._started = time.monotonic()  # the master's process, kept across upgrades
        self.image_started = time.time()  # this image of it (unix time)
        self.master_started = self.image_started  # its first (unix time)
        self.upgrades = 0  # in-place upgrades of this master (``prefork ctl upgrade``)
        self.accounts.metrics.inc(UPGRADES, {}, 0.0, UPGRADES_HELP)
        self._upgrade: Callable[[], str] = lambda: "this master cannot be upgraded in place"
        self._upgrading: Upgrading | None = None
        self._status: StatusSource = lambda now: {}
        self._pids: Mapping[int, int] = {}
        self._template_pids: Mapping[tuple[str, int], int] = {}
        self._standbys: Mapping[tuple[str, int], int] = {}
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
        *,
        template_pids: Mapping[tuple[str, int], int] | None = None,
        standbys: Mapping[tuple[str, int], int] | None = None,
        upgrade: Callable[[], str] | None = None,
        handover: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind the control socket, the metrics and the health endpoints (``ConfigError`` if
        one cannot be), on ``selector``. ``status`` is the supervisor's (cheap: a reload wait
        reads it every loop turn); ``pids`` the live workers' (their memory is read for a
        snapshot); ``phase`` the master's (``Ledger.phase``: serving, shutting down,
        stopping), which ``/readyz`` tells; ``template_pids`` the templates' by broker and
        generation, ``standbys`` their standby workers'. ``upgrade`` starts an in-place
        upgrade (or says why not: the master answers through ``upgrade_refused`` later).
        ``handover`` is what the image before this one ``export`` gave: the servers' sockets
        are taken from it, not bound (``ValueError``, ``KeyError``, ``TypeError``,
        ``OSError``: it does not fit)."""
        self._status, self._sockets = status, sockets
        self._pids = {} if pids is None else pids  # the live mapping, filled as workers start
        self._template_pids = {} if template_pids is None else template_pids  # the same
        self._standbys = {} if standbys is None else standbys
        if phase is not None:
            self._phase = phase
        if upgrade is not None:
            self._upgrade = upgrade
        carried = {} if handover is None else handover["servers"]
        path = self._config.control
        if path == "auto":
            pidfile, uid = self._config.pidfile, os.getuid()
            path = _control_path.default_path(pidfile, os.environ, uid, os.getpid())
            if pidfile is None:  # ours to make: private (beside a pid file, the 0600 mode is)
                _control_path.ensure_private_dir(_control_path.runtime_dir(os.environ, uid), uid)
        if path is not None:
            bind = _named("the control socket", self._host.bind_private, path)
            listener = _listener(carried.get("control"), bind)
            self._control = ControlServer(listener, selector, self._handle, list(sockets))
            self.control_path = path
        if self._config.metrics_bind is not None:
            where = self._config.metrics_bind
            bind = _named("the metrics endpoint", lambda at: self._host.bind(at, 64), where)
            listener = _listener(carried.get("metrics"), bind)
            self._endpoint = MetricsEndpoint(listener, selector, self.render_metrics, self.ready)
        if self._config.health_bind is not None:
            where = self._config.health_bind
            bind = _named("the health endpoint", lambda at: self._host.bind(at, 64), where)
            listener = _listener(carried.get("health"), bind)
            self._health = HealthEndpoint(listener, selector, self.ready)
        if handover is not None:
            self._take_over(handover)

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

    def _named_servers(self) -> dict[str, SideServer]:
        named = {"control": self._control, "metrics": self._endpoint, "health": self._health}
        return {name: server for name, server in named.items() if server is not None}

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
        if request.cmd == "upgrade":
            refused = self._upgrade() if self._upgrading is None else UNDER_WAY
            if refused:
                return protocol.refusal(refused)
            self._upgrading = Upgrading(peer, request.wait, time.monotonic())
            return None
        event = protocol.event_for(request)
        assert event is not None
        if request.cmd == "reload" and request.wait:
            wait = protocol.ReloadWait.of(self._status(time.monotonic()), request.broker)
            self._waits.append((peer, wait))
            self._post(event)
            return None
        self._post(event)
        return protocol.answer()

    # -- an in-place upgrade -----------------------------------------------------------------

    def upgrade_refused(self, reason: str) -> None:
        """The upgrade asked for did not happen, for ``reason``: the master carries on as it
        was, and the peer that asked is told."""
        upgrading, self._upgrading = self._upgrading, None
        if upgrading is not None and self._control is not None:
            self._control.answer(upgrading.peer, protocol.refusal(reason))

    def export(self, carry: Callable[[socket.socket], int]) -> dict[str, Any]:
        """What the next image of the master takes over (``open(handover=...)``): the
        servers' sockets and peers (``carry`` keeps a socket open across the exec and gives
        its number), the peer that asked for the upgrade, the metric totals, the times."""
        servers = {name: server.export(carry) for name, server in self._named_servers().items()}
        upgrading = self._upgrading
        asked = None
        control = self._control
        if upgrading is not None and control is not None and upgrading.peer.sock in control.peers:
            asked = {
                "fd": upgrading.peer.sock.fileno(),
                "wait": upgrading.wait,
                "asked": upgrading.asked,
                "from": VERSION,
            }
        return {
            "servers": servers,
            "upgrade": asked,
            "started": self._started,
            "master_started": self.master_started,
            "upgrades": self.upgrades,
            "accounts": self.accounts.export(),
        }

    def _take_over(self, doc: Mapping[str, Any]) -> None:
        """The rest of ``open(handover=doc)``, once the servers are made."""
        self._started = float(doc["started"])
        self.master_started = float(doc["master_started"])
        self.upgrades = int(doc["upgrades"]) + 1
        self.accounts.adopt(doc["accounts"])
        self.accounts.read_build(VERSION, platform.python_version())
        self.accounts.metrics.inc(UPGRADES, {}, 1.0, UPGRADES_HELP)
        peers: dict[int, Peer] = {}
        for name, server in self._named_servers().items():
            if (carried := doc["servers"].get(name)) is not None:
                peers.update(server.adopt(carried["peers"]))
        asked: Mapping[str, Any] | None = doc.get("upgrade")
        if asked is None or self._control is None:
            return
        peer = peers.get(int(asked["fd"]))
        if peer is None:
            return
        now = time.monotonic()
        upgrade = {
            "pid": os.getpid(),
            "from": str(asked["from"]),
            "to": VERSION,
            "upgrades": self.upgrades,
            "took": round(now - float(asked["asked"]), 3),
        }
        if asked["wait"] is True:
            wait = protocol.ReloadWait.of(self._status(now), None, upgrade=upgrade)
            self._waits.append((peer, wait))
        else:
            self._control.answer(peer, protocol.answer(upgrade=upgrade))

    # -- status ------------------------------------------------------------------------------

    def fill(
        self,
        status: dict[str, BrokerStatus],
        pids: Mapping[int, int],
        template_pids: Mapping[tuple[str, int], int],
        standbys: Mapping[tuple[str, int], int] | None = None,
    ) -> dict[str, BrokerStatus]:
        """``status`` with each worker's reported requests and connections and its RSS, and
        each template's pid and its standby's."""
        standbys = {} if standbys is None else standbys
        for name, broker in self.accounts.fill_reports(status).items():
            for row in broker["workers"]:
                pid = pids.get(row["id"])
                row["rss"] = None if pid is None else self._host.rss(pid)
            for template in broker["templates"]:
                key = (name, template["generation"])
                template["pid"] = template_pids.get(key)
                template["standby"] = standbys.get(key)
        return status

    def _filled(self, now: float) -> dict[str, BrokerStatus]:
        return self.fill(self._status(now), self._pids, self._template_pids, self._standbys)

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
            "version": VERSION,
            "started": round(self.image_started, 3),
            "master_started": round(self.master_started, 3),
            "upgrades": self.upgrades,
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


def _named(
    what: str, bind: Callable[[str], socket.socket], where: str
) -> Callable[[], socket.socket]:
    """What binds ``where``, its ``ConfigError`` saying which socket it was about."""

    def named() -> socket.socket:
        try:
            return bind(where)
        except ConfigError as exc:
            raise ConfigError(f"{what}: {exc}") from None

    return named


def _listener(
    carried: Mapping[str, Any] | None, bind: Callable[[], socket.socket]
) -> socket.socket:
    """The listener the image before this one carried over, else a new one."""
    return bind() if carried is None else adopted(int(carried["fd"]))

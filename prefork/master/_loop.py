"""The master: one select loop that turns the world into events and performs the actions.

All decisions are the supervisor's (``_supervisor.py``). Here: bind sockets, fork, signal,
reap, read and write worker channels, and sleep exactly until the next deadline (no polling:
an idle master is blocked in ``select``).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import functools
import logging
import math
import os
import random
import selectors
import signal
import socket
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, assert_never

from prefork.config import BrokerConfig, MasterConfig, brokers_unique, policy_of
from prefork.core import _events
from prefork.core import _frames as frames
from prefork.core._events import Action, Event
from prefork.core._options import ConfigError
from prefork.core._payloads import BrokerStatus
from prefork.core._roster import BrokerPolicy
from prefork.core._supervisor import Supervisor
from prefork.master import _child, _pidfile, _process, _sockets, _template, _upgrade
from prefork.master._broker import Broker, Desk
from prefork.master._channels import Channels
from prefork.master._logs import default_logging, reopen_log_files
from prefork.master._notify import Notifier
from prefork.master._signals import (
    Intent,
    SignalWakeup,
    intent_event,
    reset_in_child,
    sigterm_intent,
)
from prefork.master._templates import TemplateLink, TemplatePool
from prefork.master._upgrader import Upgrader
from prefork.ops._console import Console, Host
from prefork.ops._side import SideServer
from prefork.worker import Worker

log = logging.getLogger("prefork.master")


#: The longest the loop sleeps at once: epoll takes its timeout as an int of milliseconds, and
#: a deadline 24.8 days away would overflow it (the loop just wakes and sleeps again).
MAX_SLEEP = 86400.0


def sleep_for(deadline: float | None, side: float | None, now: float) -> float | None:
    """How long the loop may sleep in ``select`` before the nearest of these deadlines (None:
    until something happens)."""
    soonest = min(d for d in (deadline, side, math.inf) if d is not None)
    return None if soonest == math.inf else min(MAX_SLEEP, max(0.0, soonest - now))


class Master:
    """Binds the sockets, forks and supervises the workers of every broker.

    ``Master(**options)`` takes the fields of ``MasterConfig``; an unknown or bad option raises
    ``ConfigError`` (a ``ValueError``).
    """

    def __init__(self, **options: Any) -> None:
        self.config = MasterConfig.from_options(options)
        for name in ("metrics_bind", "health_bind"):  # a bad address fails here, not at run()
            if (address := getattr(self.config, name)) is not None:
                try:
                    _sockets.parse(address)
                except ConfigError as exc:
                    raise ConfigError(f"{name}: {exc}") from None
        self._brokers: dict[str, Broker] = {}
        # The worker of each broker: a class, or "module:attr" until preloaded.
        self._classes: dict[str, builtins.type[Worker] | str] = {}
        self._supervisor = Supervisor(
            random=random.random, shutdown_delay=self.config.shutdown_delay
        )
        self._sigterm = ""  # what SIGTERM does, and why (said in the first log line)
        self._policies: dict[str, BrokerPolicy] = {}
        self._pending: deque[Event] = deque()
        self._desk = Desk(self._pending.append, self.status, self._send)
        self._channels: Channels | None = None
        self._templates: TemplatePool | None = None  # --template: the templates' links
        self._pids: dict[int, int] = {}  # worker id -> pid, while the worker is not reaped
        self._by_pid: dict[int, int] = {}
        self._sockets: dict[str, list[socket.socket]] = {}
        self._selector: selectors.DefaultSelector | None = None
        self._wakeup: SignalWakeup | None = None
        self._exit_code: int | None = None
        self._pidfile_written = ""
        self._notifier = Notifier(os.environ)
        self._identity = _process.Identity()
        host = Host(
            bind=_sockets.bind,
            bind_private=_sockets.bind_private,
            describe=_sockets.describe,
            listen_queue=_sockets.listen_queue,
            rss=_process.rss,
            usage=_process.usage,
        )
        self._console = Console(self.config, self._pending.append, host)
        self._upgrader = Upgrader(self._supervisor, self._console)

    def broker(self, type: str, worker: type[Worker] | str, **options: Any) -> Broker:
        """Declare a worker type; returns its ``Broker``.

        ``options`` are the fields of ``BrokerConfig`` (``workers``, ``listen``, ``timeout``,
        ``backlog``...); the rest are the worker's own options (``self.options``), checked
        by the worker class's ``check_options`` when ``worker`` is a class. Raises
        ``ConfigError`` on bad input.
        """
        config = BrokerConfig.from_options(type, worker, options)
        brokers_unique([*(b.config for b in self._brokers.values()), config])
        for addr in config.listen:
            _sockets.parse(addr)
        self._classes[type] = _child.check_worker(config.worker, config.worker_options)
        broker = self._brokers[type] = Broker(config, self._desk)
        policy = self._policies[type] = policy_of(config, self.config)
        self._supervisor.add_broker(policy)
        return broker

    def status(self) -> dict[str, BrokerStatus]:
        """Each broker's desired and live counts, generation, draining, reloading, backoff,
        starts, restarts and crashes, its latest reload, and a row per worker: pid,
        generation, state, uptime, the requests and connections it reported, its RSS."""
        return self._console.fill(self._supervisor.status(time.monotonic()), self._pids)

    def relaunch_as(self, relaunch: _upgrade.Relaunch) -> None:
        """Let ``prefork ctl upgrade`` re-execute this master so (``prefork serve`` does; an
        API master, whose program knows no ``--check-config``, refuses upgrades)."""
        brokers = tuple((n, b.config.listen) for n, b in self._brokers.items())
        self._upgrader.relaunch = dataclasses.replace(relaunch, brokers=brokers)

    def listeners(self) -> dict[str, tuple[str, ...]]:
        """Each broker and the addresses it listens on (what an upgrade keeps)."""
        return {name: broker.config.listen for name, broker in self._brokers.items()}

    def stop(self) -> None:
        """Stop as SIGINT does: every worker leaves gracefully, then ``run()`` returns. Queued
        like a broker's commands: safe from a broker callback (a harness whose workers are
        done ends its master this way)."""
        self._pending.append(_events.StopRequested())

    # --- running ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (SIGINT/SIGQUIT); returns the exit code.

        Raises ``ConfigError`` before anything forks if an address cannot be bound or a
        preloaded worker cannot be imported.
        """
        if not self._brokers:
            raise ConfigError("the master has no brokers; add one with master.broker(...)")
        handover = _upgrade.incoming(os.environ, os.getpid())
        default_logging()
        self._identity = _process.identity(self.config.user, self.config.group)
        _process.set_title(self._title(), self.config.name or "prefork: master")
        if self.config.pidfile:
            _pidfile.claim(self.config.pidfile, os.getpid())
            self._pidfile_written = self.config.pidfile
        # Not ours to end: the embedding program's own (after an upgrade, every child is ours).
        others = _process.children() if handover is None else set()
        if self.config.umask is not None:
            os.umask(self.config.umask)
        try:
            if handover is not None:
                self._sockets.update(_upgrade.listeners(handover, self._brokers))
            self._bind_all()
            self._preload()
            _process.adopt_orphans(True)
            sigterm, self._sigterm = sigterm_intent(self.config.sigterm, os.getpid(), os.environ)
            with SignalWakeup(sigterm=sigterm) as wakeup, selectors.DefaultSelector() as selector:
                self._wakeup, self._selector = wakeup, selector
                self._channels = Channels(selector, self._post, self.config.max_frame)
                self._templates = TemplatePool(
                    selector, self._post, self._from_template, self._not_from_template
                )
                selector.register(wakeup.fileno(), selectors.EVENT_READ)
                self._upgrader.open(selector, self._sockets, self._channels, wakeup.waiting)
                try:
                    if handover is not None:
                        self._take_over(handover, selector)
                    else:
                        self._open_console(selector)
                        log.info("master %d started: %s", os.getpid(), self._describe())
                        self._pending.appendleft(_events.Started())
                    return self._loop(selector, self._channels)
                finally:
                    # While the selector is open: the console's peers unregister from it.
                    self._console.close()
        finally:
            # What workers forked and left behind was adopted by us: nothing they started may
            # hold a listener once the master is gone. (Workers still running, if the loop
            # raised, leave by themselves when their channel closes.)
            _process.end(_process.children() - others - set(self._by_pid))
            _process.adopt_orphans(False)
            self._close_all()

    def _open_console(
        self, selector: selectors.BaseSelector, handover: Mapping[str, Any] | None = None
    ) -> None:
        sup, ask = self._supervisor, self._upgrader.ask
        self._console.open(
            selector,
            sup.status,
            self._sockets,
            self._pids,
            sup.ledger.phase,
            upgrade=ask,
            handover=handover,
        )

    def _loop(self, selector: selectors.BaseSelector, channels: Channels) -> int:
        while True:
            self._process_pending()
            if self._exit_code is not None:
                return self._exit_code
            self._upgrader.hand_over_if_due()
            deadline = self._supervisor.next_deadline()
            sides = (self._console, self._upgrader)
            side = min((d for s in sides if (d := s.deadline()) is not None), default=None)
            self._dispatch(selector.select(sleep_for(deadline, side, time.monotonic())), channels)
            now = time.monotonic()
            if side is not None and now >= side:
                for s in sides:
                    s.expire(now)
            if deadline is not None and now >= deadline:
                # Read whatever is waiting before the supervisor judges liveness: after a pause
                # (SIGSTOP, a paused VM) select() returns nothing once its timeout has passed,
                # though heartbeats are waiting on every channel.
                self._dispatch(selector.select(0), channels)
                self._post(_events.TimePassed(overslept=now - deadline))

    def _dispatch(self, ready: list[tuple[selectors.SelectorKey, int]], channels: Channels) -> None:
        for key, mask in ready:
            match key.data:
                case None:
                    self._on_signals()
                case _sockets.TurnedAway() as turned:
                    turned.accept(key.fileobj)  # type: ignore[arg-type]
                case SideServer() as server:
                    server.ready(key.fileobj, mask)  # type: ignore[arg-type]
                case _upgrade.Check():
                    self._upgrader.read()
                case TemplateLink() as link:
                    self._live_templates().read(link)
                case channel:
                    if mask & selectors.EVENT_WRITE:
                        channels.flush(channel)
                    if mask & selectors.EVENT_READ:
                        channels.read(channel)

    def _turn_away(self, broker: str, on: bool) -> None:
        assert self._selector is not None
        worker = self._classes[broker]
        options = self._brokers[broker].config.worker_options
        reply = b"" if isinstance(worker, str) else worker.drained_reply_for(options)
        for sock in self._sockets[broker]:
            if on:
                # Non-blocking (a flag the workers' event loops set on these sockets anyway):
                # a connection a worker takes first must not block the master in accept().
                sock.setblocking(False)
                self._selector.register(sock, selectors.EVENT_READ, _sockets.TurnedAway(reply))
            else:
                self._selector.unregister(sock)

    def _process_pending(self) -> None:
        while self._pending:
            event = self._pending.popleft()
            for action in self._supervisor.handle(event, time.monotonic()):
                self._perform(action)
        self._console.settle()

    def _post(self, event: Event) -> None:
        self._pending.append(event)

    # --- signals and children ----------------------------------------------------------------

    def _on_signals(self) -> None:
        assert self._wakeup is not None
        for intent in self._wakeup.read():
            log.log(
                logging.DEBUG if intent is Intent.CHILD else logging.INFO,
                "signal: %s",
                intent.value,
            )
            match intent:
                case Intent.CHILD:
                    self._reap()
                case Intent.REOPEN_LOGS:
                    reopen_log_files()
                case (
                    Intent.RELOAD
                    | Intent.DRAIN
                    | Intent.RESUME
                    | Intent.STOP
                    | Intent.TERMINATE
                    | Intent.SCALE_UP
                    | Intent.SCALE_DOWN
                ):
                    self._post(intent_event(intent))
                case _:
                    assert_never(intent)

    def _reap(self) -> None:
        for dead in _process.reap():
            if self._upgrader.reaped(dead):
                continue
            if dead.pid in self._by_pid:
                self._reaped(dead)
            else:  # a template, a worker a template has not named yet, or not one of ours
                self._live_templates().reaped(dead, time.monotonic())  # (we may be PID 1)

    def _reaped(self, dead: _process.Reaped) -> None:
        worker_id = self._by_pid.pop(dead.pid)
        del self._pids[worker_id]
        self._live_channels().remove(worker_id)
        self._post(_events.WorkerExited(worker_id, dead.exit_code, dead.signal))

    # --- actions -----------------------------------------------------------------------------

    def _perform(self, action: Action) -> None:
        self._console.observe(action)
        match action:
            case _events.Spawn():
                self._spawn(action)
            case _events.Terminate(worker_id=worker_id, replaced=replaced):
                self._terminate(worker_id, replaced)
            case _events.Kill(worker_id=worker_id):
                self._signal(worker_id, signal.SIGKILL)
            case _events.DumpStack(worker_id=worker_id):
                self._signal(worker_id, _child.DUMP_SIGNAL)
            case _events.Emit(broker=broker, event=event, args=args):
                self._brokers[broker].emit(event, args)
            case _events.Log(level=level, message=message):
                log.log(level, message)
            case _events.Notify(fields=fields):
                self._notifier.send(*fields)
            case _events.Exit(code=code):
                self._exit_code = code
            case _events.TurnAway(broker=broker, on=on):
                self._turn_away(broker, on)
            case _events.MeasureMemory(worker_ids=ids):
                self._measure_memory(ids)
            case _events.StartTemplate(broker=broker, generation=generation):
                self._start_template(broker, generation)
            case _events.StopTemplate(broker=broker, generation=generation, kill=kill):
                self._live_templates().stop(broker, generation, kill)
            case _:
                assert_never(action)

    def _measure_memory(self, worker_ids: tuple[int, ...]) -> None:
        measured = []
        for worker_id in worker_ids:
            pid = self._pids.get(worker_id)
            rss = None if pid is None else _process.rss(pid)
            if rss is not None:
                measured.append((worker_id, rss))
        self._post(_events.MemoryMeasured(tuple(measured)))

    def _worker_spec(
        self,
        broker: str,
        generation: int,
        worker: type[Worker] | str,
        worker_id: int,
        channel: socket.socket,
    ) -> _child.WorkerSpec:
        config = self._brokers[broker].config
        return _child.WorkerSpec(
            broker=broker,
            worker=worker,
            worker_id=worker_id,
            generation=generation,
            channel=channel,
            sockets=self._sockets[broker],
            backlog=config.backlog,
            options=config.worker_options,
            heartbeat=self._policies[broker].heartbeat_interval,
            graceful_timeout=self._policies[broker].graceful_timeout,
            max_frame=self.config.max_frame,
            identity=self._identity,
            name=self.config.name or "",
        )

    def _close_in_child(self) -> list[int]:
        """The master's fds a forked worker or template closes."""
        assert self._selector is not None and self._wakeup is not None
        return [
            *self._live_channels().fds(),
            *self._live_templates().fds(),
            self._selector.fileno(),
            *self._wakeup.fds(),
            *self._console.fds(),
        ]

    def _spawn(self, action: _events.Spawn) -> None:
        worker_id, broker = action.worker_id, action.broker
        if self._policies[broker].template:  # the template names it (``_from_template``)
            now = time.monotonic()
            if why := self._live_templates().request(worker_id, broker, action.generation, now):
                self._post(_events.SpawnFailed(worker_id, why))
            return
        ours, theirs = socket.socketpair()
        worker = self._classes[broker]
        spec = self._worker_spec(broker, action.generation, worker, worker_id, theirs)

        def before() -> None:
            reset_in_child()
            ours.close()

        try:
            pid = _process.fork_worker(lambda: _child.run(spec), self._close_in_child(), before)
        except OSError as exc:
            ours.close()
            theirs.close()
            self._post(_events.SpawnFailed(worker_id, str(exc)))
            return
        theirs.close()
        self._from_template(worker_id, pid, ours, None)

    def _from_template(
        self, worker_id: int, pid: int, channel: socket.socket, dead: _process.Reaped | None
    ) -> None:
        """Worker ``worker_id`` runs as ``pid`` (``dead``: and was reaped already)."""
        self._live_channels().add(worker_id, channel)
        self._pids[worker_id] = pid
        self._by_pid[pid] = worker_id
        self._post(_events.WorkerSpawned(worker_id, pid))
        if dead is not None:
            self._reaped(dead)

    def _not_from_template(self, worker_id: int, reason: str, backoff: bool) -> None:
        self._post(_events.SpawnFailed(worker_id, reason, backoff))

    def _start_template(self, broker: str, generation: int) -> None:
        def fork(link: socket.socket, ours: int) -> int:
            spec = _template.TemplateSpec(
                broker=broker,
                generation=generation,
                worker=self._classes[broker],
                options=self._brokers[broker].config.worker_options,
                link=link,
                master_pid=os.getpid(),
                worker_spec=functools.partial(self._worker_spec, broker, generation),
                identity=self._identity,
                name=self.config.name or "",
            )
            close = [*self._close_in_child(), ours]
            return _process.fork_worker(lambda: _template.run(spec), close, reset_in_child)

        self._live_templates().start(broker, generation, fork)

    def _signal(self, worker_id: int, signum: int) -> None:
        # An action may name a worker reaped a moment ago (its exit is still queued as an
        # event): nothing to signal then; the supervisor hears of the exit next. A worker a
        # template has not named yet gets it once named.
        pid = self._pids.get(worker_id)
        if pid is None:
            if self._templates is not None:
                self._templates.signal(worker_id, signum)
        else:
            with contextlib.suppress(ProcessLookupError):  # died, not reaped yet
                os.kill(pid, signum)

    def _terminate(self, worker_id: int, replaced: bool) -> None:
        """A STOP frame tells the worker why it leaves (a signal cannot); a worker whose
        channel is gone gets SIGTERM. The frame alone, not both: whichever the worker saw
        first would decide, and a reload must close WebSockets with 1012 every time."""
        channels = self._channels
        if channels is not None and channels.open(worker_id):
            body = {"replaced": replaced}
            channels.send([worker_id], frames.encode(frames.STOP, body))
        else:
            self._signal(worker_id, signal.SIGTERM)

    def _live_channels(self) -> Channels:
        assert self._channels is not None
        return self._channels

    def _live_templates(self) -> TemplatePool:
        assert self._templates is not None
        return self._templates

    def _send(self, broker: str, obj: Any) -> None:
        frame = frames.encode(frames.MESSAGE, obj, max_frame=self.config.max_frame)
        if self._channels is not None:
            ids = [info.id for info in self._supervisor.ledger.reachable(broker)]
            self._channels.send(ids, frame)

    # --- an in-place upgrade (prefork ctl upgrade: _upgrader.py, _upgrade.py) ---------------

    def _take_over(self, doc: dict[str, Any], selector: selectors.BaseSelector) -> None:
        """Run on from where the image before this one handed over: its workers, their
        channels, its console; then replace every worker, as a reload does."""
        actions, pids = self._upgrader.take_over(doc, lambda d: self._open_console(selector, d))
        self._pids.update(pids)
        self._by_pid.update((pid, worker_id) for worker_id, pid in pids.items())
        for action in actions:
            self._perform(action)
        said = self._upgrader.said()
        log.info("master %d %s: %s; replacing every worker", os.getpid(), said, self._describe())
        self._pending.append(_events.ReloadRequested())

    # --- set-up and tear-down ----------------------------------------------------------------

    def _bind_all(self) -> None:
        """Bind every broker's addresses (but a broker's sockets carried over an upgrade)."""
        for broker in self._brokers.values():
            if broker.type not in self._sockets:
                listen, backlog = broker.config.listen, broker.config.backlog
                self._sockets[broker.type] = [_sockets.bind(a, backlog) for a in listen]

    def _preload(self) -> None:
        for broker in self._brokers.values():
            spec = self._classes[broker.type]
            if broker.config.preload and isinstance(spec, str):
                try:
                    self._classes[broker.type] = _child.load_worker_class(spec)
                except Exception as exc:
                    raise ConfigError(f"cannot preload {spec!r}: {exc}") from None

    def _close_all(self) -> None:
        self._console.close()
        if self._channels is not None:
            self._channels.close_all()
        if self._templates is not None:
            self._templates.close_all()
        for socks in self._sockets.values():
            for sock in socks:
                _sockets.close_listener(sock)
        self._sockets.clear()
        if self._pidfile_written:
            _pidfile.release(self._pidfile_written, os.getpid())  # ours only
        self._pidfile_written = ""

    def _describe(self) -> str:
        """Each broker's workers and where they listen: URLs for worker types that have a
        ``url_scheme`` (the HTTP worker), so the first log line says what to open."""
        parts = []
        for name, broker in self._brokers.items():
            worker = self._classes[name]
            options = broker.config.worker_options
            scheme = "" if isinstance(worker, str) else worker.url_scheme_for(options)
            where = ", ".join(_sockets.describe(s, scheme) for s in self._sockets[name])
            parts.append(f"{name} x{broker.config.workers}" + (f" on {where}" if where else ""))
        console = self._console.describe()
        said = "; ".join(parts) + (f"; {console}" if console else "")
        return f"{said} (Ctrl-C stops; {self._sigterm})"

    def _title(self) -> str:
        """``prefork: master [APP]`` for ps: what the workers serve (a worker type may say,
        as the HTTP worker names its app), else the brokers and their counts."""
        labels = []
        for name, broker in self._brokers.items():
            worker = self._classes[name]
            label = (
                "" if isinstance(worker, str) else worker.title_for(broker.config.worker_options)
            )
            labels.append(label or f"{name} x{broker.config.workers}")
        return f"{self.config.name or 'prefork'}: master [{', '.join(labels)}]"

"""The master: one select loop that turns the world into events and performs the actions.

All decisions are the supervisor's (``_supervisor.py``). Here: turn signals, reaped children,
channel frames and deadlines into events, perform the actions that come back, and sleep
exactly until the next deadline (no polling: an idle master is blocked in ``select``). What
it does to its children (fork, signal, reap, message) is ``_children.py``; its bring-up and
tear-down (bind, preload, close) ``_bringup.py``.
"""

from __future__ import annotations

import builtins
import dataclasses
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
from prefork.core._events import Action, Event
from prefork.core._options import ConfigError
from prefork.core._payloads import BrokerStatus
from prefork.core._roster import BrokerPolicy
from prefork.core._supervisor import Supervisor
from prefork.core._templates import template_choice
from prefork.master import _bringup, _child, _pidfile, _process, _sockets, _upgrade
from prefork.master._broker import Broker, Desk
from prefork.master._channels import Channels
from prefork.master._children import Children
from prefork.master._logs import default_logging, reopen_log_files
from prefork.master._notify import Notifier
from prefork.master._signals import (
    Intent,
    SignalWakeup,
    intent_event,
    sigterm_intent,
)
from prefork.master._templates import TemplateLink
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
        self._sockets: dict[str, list[socket.socket]] = {}
        self._children = Children(
            self.config, self._brokers, self._classes, self._policies, self._sockets, self._post
        )
        self._selector: selectors.DefaultSelector | None = None
        self._wakeup: SignalWakeup | None = None
        self._exit_code: int | None = None
        self._pidfile_written = ""
        self._notifier = Notifier(os.environ)
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
        worker_class = self._classes[type] = _child.check_worker(
            config.worker, config.worker_options
        )
        broker = self._brokers[type] = Broker(config, self._desk)
        prepares = _child.prepares_template(worker_class)
        policy = self._policies[type] = policy_of(config, self.config, prepares)
        self._supervisor.add_broker(policy)
        return broker

    def status(self) -> dict[str, BrokerStatus]:
        """Each broker's desired and live counts, generation, draining, reloading, backoff,
        starts, restarts and crashes, its latest reload, and a row per worker: pid,
        generation, state, uptime, the requests and connections it reported, its RSS; and
        its templates (generation, state, pid, uptime)."""
        status = self._supervisor.status(time.monotonic())
        children = self._children
        return self._console.fill(
            status, children.pids, children.template_pids(), children.standbys()
        )

    def relaunch_as(self, relaunch: _upgrade.Relaunch) -> None:
        """Let ``prefork ctl upgrade`` re-execute this master so (``prefork serve`` does; an
        API master, whose program knows no ``--check-config``, refuses upgrades)."""
        brokers = tuple((n, b.config.listen) for n, b in self._brokers.items())
        self._upgrader.relaunch = dataclasses.replace(relaunch, brokers=brokers)

    def listeners(self) -> dict[str, tuple[str, ...]]:
        """Each broker and the addresses it listens on (what an upgrade keeps)."""
        return {name: broker.config.listen for name, broker in self._brokers.items()}

    def template_choices(self) -> dict[str, str]:
        """Each broker and a line saying whether its workers fork from templates, and why
        (``--check-config`` prints it)."""
        choices = {}
        for name, broker in self._brokers.items():
            c, prepares = broker.config, _child.prepares_template(self._classes[name])
            choices[name] = template_choice(c.template, c.preload, bool(c.refork_after), prepares)
        return choices

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
        self._children.identity = _process.identity(self.config.user, self.config.group)
        title = _bringup.title(self._brokers, self._classes, self.config.name)
        _process.set_title(title, self.config.name or "prefork: master")
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
            _bringup.bind_all(self._brokers, self._sockets)
            _bringup.preload(self._brokers, self._classes)
            _process.adopt_orphans(True)
            sigterm, self._sigterm = sigterm_intent(self.config.sigterm, os.getpid(), os.environ)
            with SignalWakeup(sigterm=sigterm) as wakeup, selectors.DefaultSelector() as selector:
                self._wakeup, self._selector = wakeup, selector
                channels = self._children.open(selector, self._others_in_child)
                selector.register(wakeup.fileno(), selectors.EVENT_READ)
                self._upgrader.open(selector, self._sockets, channels, wakeup.waiting)
                try:
                    if handover is not None:
                        self._take_over(handover, selector)
                    else:
                        self._open_console(selector)
                        log.info("master %d started: %s", os.getpid(), self._describe())
                        self._pending.appendleft(_events.Started())
                    return self._loop(selector, channels)
                finally:
                    # While the selector is open: the console's peers unregister from it.
                    self._console.close()
        finally:
            # What workers forked and left behind was adopted by us: nothing they started may
            # hold a listener once the master is gone. (Workers still running, if the loop
            # raised, leave by themselves when their channel closes.)
            _process.end(_process.children() - others - set(self._children.by_pid))
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
            self._children.pids,
            sup.ledger.phase,
            template_pids=self._children.template_pids(),
            standbys=self._children.standbys(),
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
                    self._children.read_link(link)
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
            if not self._upgrader.reaped(dead):
                self._children.reap(dead)

    # --- actions -----------------------------------------------------------------------------

    def _perform(self, action: Action) -> None:
        self._console.observe(action)
        children = self._children
        match action:
            case _events.Spawn():
                children.spawn(action)
            case _events.Terminate(worker_id=worker_id, replaced=replaced):
                children.terminate(worker_id, replaced)
            case _events.Kill(worker_id=worker_id):
                children.signal(worker_id, signal.SIGKILL)
            case _events.DumpStack(worker_id=worker_id):
                children.signal(worker_id, _child.DUMP_SIGNAL)
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
                children.measure_memory(ids)
            case _events.StartTemplate(broker=broker, generation=generation):
                children.start_template(broker, generation)
            case _events.StopTemplate(broker=broker, generation=generation, kill=kill):
                children.live_templates().stop(broker, generation, kill)
            case _events.Promote():
                children.promote(action)
            case _:
                assert_never(action)

    def _others_in_child(self) -> list[int]:
        """The master's fds, besides its children's channels and links, a child closes."""
        assert self._selector is not None and self._wakeup is not None
        return [self._selector.fileno(), *self._wakeup.fds(), *self._console.fds()]

    def _send(self, broker: str, obj: Any) -> None:
        ids = [info.id for info in self._supervisor.ledger.reachable(broker)]
        self._children.send(ids, obj)

    # --- an in-place upgrade (prefork ctl upgrade: _upgrader.py, _upgrade.py) ---------------

    def _take_over(self, doc: dict[str, Any], selector: selectors.BaseSelector) -> None:
        """Run on from where the image before this one handed over: its workers, their
        channels, its console; then replace every worker, as a reload does."""
        actions, pids = self._upgrader.take_over(doc, lambda d: self._open_console(selector, d))
        self._children.adopt(pids)
        for action in actions:
            self._perform(action)
        said = self._upgrader.said()
        log.info("master %d %s: %s; replacing every worker", os.getpid(), said, self._describe())
        self._pending.append(_events.ReloadRequested())

    # --- tear-down ----------------------------------------------------------------------------

    def _close_all(self) -> None:
        self._console.close()
        self._children.close()
        _bringup.close_listeners(self._sockets)
        if self._pidfile_written:
            _pidfile.release(self._pidfile_written, os.getpid())  # ours only
        self._pidfile_written = ""

    def _describe(self) -> str:
        said = _bringup.describe(self._brokers, self._classes, self._sockets)
        console = self._console.describe()
        said += f"; {console}" if console else ""
        return f"{said} (Ctrl-C stops; {self._sigterm})"

"""The master: one select loop that turns the world into events and performs the actions.

All decisions are the supervisor's (``_supervisor.py``). Here: bind sockets, fork, signal,
reap, read and write worker channels, and sleep exactly until the next deadline (no polling:
an idle master is blocked in ``select``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import selectors
import signal
import socket
import time
from collections import deque
from typing import Any

from prefork import _child, _events, _process, _sockets
from prefork import _frames as frames
from prefork._broker import Broker
from prefork._channels import Channels
from prefork._events import Action, Event
from prefork._notify import Notifier
from prefork._signals import Intent, SignalWakeup, intent_event, reset_in_child
from prefork._supervisor import BrokerPolicy, Supervisor
from prefork.config import BrokerConfig, ConfigError, MasterConfig, brokers_unique
from prefork.worker import Worker

log = logging.getLogger("prefork.master")


class Master:
    """Binds the sockets, forks and supervises the workers of every broker.

    ``Master(**options)`` takes the fields of ``MasterConfig``; an unknown or bad option raises
    ``ConfigError`` (a ``ValueError``).
    """

    def __init__(self, **options: Any) -> None:
        self.config = MasterConfig.from_options(options)
        self._brokers: dict[str, Broker] = {}
        self._supervisor: Supervisor | None = None
        self._pending: deque[Event] = deque()
        self._channels: Channels | None = None
        self._by_pid: dict[int, int] = {}
        self._sockets: dict[str, list[socket.socket]] = {}
        self._selector: selectors.DefaultSelector | None = None
        self._wakeup: SignalWakeup | None = None
        self._exit_code: int | None = None
        self._pidfile_written = ""
        self._notifier = Notifier(os.environ)

    def broker(
        self,
        type: str,
        worker: type[Worker] | str,
        *,
        workers: int = 1,
        recycle_rate: float = 0.0,
        listen: tuple[str, ...] | list[str] = (),
        timeout: float = 30.0,
        boot_timeout: float = 60.0,
        graceful_timeout: float | None = None,
        backlog: int = 2048,
        preload: bool = False,
        **worker_options: Any,
    ) -> Broker:
        """Declare a worker type; returns its ``Broker``. Raises ``ConfigError`` on bad input."""
        config = BrokerConfig(
            type,
            worker,
            workers,
            recycle_rate,
            (listen,) if isinstance(listen, str) else tuple(listen),
            timeout,
            boot_timeout,
            graceful_timeout,
            backlog,
            preload,
            worker_options,
        )
        brokers_unique([*(b.config for b in self._brokers.values()), config])
        for addr in config.listen:
            _sockets.parse(addr)
        broker = Broker(self, config)
        self._brokers[type] = broker
        return broker

    # --- running ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (SIGINT/SIGQUIT); returns the exit code.

        Raises ``ConfigError`` before anything forks if an address cannot be bound or a
        preloaded worker cannot be imported.
        """
        if not self._brokers:
            raise ConfigError("the master has no brokers; add one with master.broker(...)")
        self._bind_all()
        try:
            self._preload()
            self._write_pidfile()
            with SignalWakeup() as wakeup, selectors.DefaultSelector() as selector:
                self._wakeup, self._selector = wakeup, selector
                self._channels = Channels(selector, self._post, self.config.max_frame)
                selector.register(wakeup.fileno(), selectors.EVENT_READ)
                self._supervisor = Supervisor(
                    [self._policy(b.config) for b in self._brokers.values()],
                    random=random.random,
                )
                log.info("master %d started: %s", os.getpid(), self._describe())
                self._pending.appendleft(_events.Started(time.monotonic()))
                return self._loop()
        finally:
            self._close_all()

    def _loop(self) -> int:
        assert self._supervisor is not None and self._selector is not None
        channels = self._channels
        assert channels is not None
        while True:
            self._process_pending()
            if self._exit_code is not None:
                return self._exit_code
            deadline = self._supervisor.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            for key, mask in self._selector.select(timeout):
                if key.data is None:
                    self._on_signals()
                    continue
                if mask & selectors.EVENT_WRITE:
                    channels.flush(key.data)
                if mask & selectors.EVENT_READ:
                    channels.read(key.data)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self._post(_events.TimePassed(now))

    def _process_pending(self) -> None:
        supervisor = self._live_supervisor()
        while self._pending:
            for action in supervisor.handle(self._pending.popleft()):
                self._perform(action)

    def _post(self, event: Event) -> None:
        """Queue an event, stamped with the current time."""
        self._pending.append(dataclasses.replace(event, now=time.monotonic()))

    # --- signals and children ----------------------------------------------------------------

    def _on_signals(self) -> None:
        assert self._wakeup is not None
        for intent in self._wakeup.read():
            log.log(
                logging.DEBUG if intent is Intent.CHILD else logging.INFO,
                "signal: %s",
                intent.value,
            )
            if intent is Intent.CHILD:
                self._reap()
            elif intent is Intent.REOPEN_LOGS:
                _reopen_log_files()
            else:
                self._post(intent_event(intent))

    def _reap(self) -> None:
        for dead in _process.reap():
            worker_id = self._by_pid.pop(dead.pid, None)
            if worker_id is None:
                continue  # not one of ours (we may be PID 1 in a container)
            self._live_channels().remove(worker_id)
            self._post(_events.WorkerExited(worker_id, dead.exit_code, dead.signal, 0.0))

    # --- actions -----------------------------------------------------------------------------

    def _perform(self, action: Action) -> None:
        if isinstance(action, _events.Spawn):
            self._spawn(action)
        elif isinstance(action, _events.Terminate):
            self._signal(action.worker_id, signal.SIGTERM)
        elif isinstance(action, _events.Kill):
            self._signal(action.worker_id, signal.SIGKILL)
        elif isinstance(action, _events.DumpStack):
            self._signal(action.worker_id, _child.DUMP_SIGNAL)
        elif isinstance(action, _events.Emit):
            self._brokers[action.broker]._emit(action.event, action.args)
        elif isinstance(action, _events.Log):
            log.log(action.level, action.message)
        elif isinstance(action, _events.Notify):
            self._notifier.send(*action.fields)
        else:
            self._exit_code = action.code

    def _spawn(self, action: _events.Spawn) -> None:
        assert self._selector is not None and self._wakeup is not None
        broker = self._brokers[action.broker]
        ours, theirs = socket.socketpair()
        spec = _child.WorkerSpec(
            broker=broker.type,
            worker=broker.config.worker,
            worker_id=action.worker_id,
            generation=action.generation,
            channel=theirs,
            sockets=self._sockets[broker.type],
            backlog=broker.config.backlog,
            options=broker.config.worker_options,
            heartbeat=self._live_supervisor().heartbeat_interval(broker.type),
            max_frame=self.config.max_frame,
        )
        others = self._live_channels().fds()
        selector_fd = self._selector.fileno()

        def before() -> None:
            reset_in_child()
            ours.close()

        try:
            pid = _process.fork_worker(
                lambda: _child.run(spec), [*others, selector_fd, *self._wakeup_fds()], before
            )
        except OSError as exc:
            ours.close()
            theirs.close()
            self._post(_events.SpawnFailed(action.worker_id, str(exc), 0.0))
            return
        theirs.close()
        self._live_channels().add(action.worker_id, pid, ours)
        self._by_pid[pid] = action.worker_id
        self._post(_events.WorkerSpawned(action.worker_id, pid, 0.0))

    def _wakeup_fds(self) -> list[int]:
        assert self._wakeup is not None
        return self._wakeup.fds()

    def _signal(self, worker_id: int, signum: int) -> None:
        channel = self._live_channels().get(worker_id)
        if channel is not None:
            # Already dead is fine: the reaper tells the supervisor.
            with contextlib.suppress(ProcessLookupError):
                os.kill(channel.pid, signum)

    def _live_channels(self) -> Channels:
        assert self._channels is not None
        return self._channels

    def _live_supervisor(self) -> Supervisor:
        assert self._supervisor is not None
        return self._supervisor

    def _send(self, broker: Broker, obj: Any) -> None:
        frame = frames.encode(frames.MESSAGE, obj, max_frame=self.config.max_frame)
        if self._supervisor is not None:
            ids = [info.id for info in self._supervisor.workers(broker.type)]
            self._live_channels().send(ids, frame)

    # --- set-up and tear-down ----------------------------------------------------------------

    def _bind_all(self) -> None:
        try:
            for broker in self._brokers.values():
                self._sockets[broker.type] = [
                    _sockets.bind(addr, broker.config.backlog) for addr in broker.config.listen
                ]
        except ConfigError:
            self._close_all()
            raise

    def _preload(self) -> None:
        for broker in self._brokers.values():
            if broker.config.preload and isinstance(broker.config.worker, str):
                try:
                    cls = _child.load_worker_class(broker.config.worker)
                except Exception as exc:
                    raise ConfigError(f"cannot preload {broker.config.worker!r}: {exc}") from None
                broker.config = dataclasses.replace(broker.config, worker=cls)

    def _write_pidfile(self) -> None:
        if self.config.pidfile:
            self._pidfile_written = self.config.pidfile
            with open(self.config.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")

    def _close_all(self) -> None:
        if self._channels is not None:
            self._channels.close_all()
        for socks in self._sockets.values():
            for sock in socks:
                _sockets.close_listener(sock)
        self._sockets.clear()
        if self._pidfile_written and os.path.exists(self._pidfile_written):
            os.unlink(self._pidfile_written)  # ours only: never another master's
        self._pidfile_written = ""

    def _policy(self, config: BrokerConfig) -> BrokerPolicy:
        c = self.config
        return BrokerPolicy(
            name=config.type,
            workers=config.workers,
            recycle_rate=config.recycle_rate,
            timeout=config.timeout,
            boot_timeout=config.boot_timeout,
            graceful_timeout=(
                c.graceful_timeout if config.graceful_timeout is None else config.graceful_timeout
            ),
            backoff_base=c.backoff_base,
            backoff_cap=c.backoff_cap,
            backoff_reset=c.backoff_reset,
        )

    def _describe(self) -> str:
        parts = []
        for name, broker in self._brokers.items():
            where = ", ".join(_sockets.describe(s) for s in self._sockets[name])
            parts.append(f"{name} x{broker.config.workers}" + (f" on {where}" if where else ""))
        return "; ".join(parts)

    # --- what Broker asks of us ----------------------------------------------------------------

    def _desired(self, broker: Broker) -> int:
        if self._supervisor is None:
            return broker.config.workers
        return self._supervisor.desired(broker.type)

    def _status(self, broker: Broker) -> dict[str, object]:
        if self._supervisor is None:
            return {"desired": broker.config.workers, "live": 0, "draining": False}
        return self._supervisor.status()[broker.type]

    def _draining(self, broker: Broker) -> bool:
        return self._supervisor is not None and self._supervisor.draining(broker.type)


def _reopen_log_files() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()
                handler.stream = handler._open()
            finally:
                handler.release()

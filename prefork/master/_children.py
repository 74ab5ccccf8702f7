"""The master's children: forking workers and templates, the pid and channel of each worker,
and what the master does to one (signal it, ask it to stop, message it, hear it was reaped).

A worker of a template broker is forked by its template (``_templates.py``), not here: the
master asks, and the template names the worker's pid (``named``) or says why not
(``not_named``). Every other worker is forked here, with the spec ``_child.run`` runs.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prefork.config import MasterConfig
from prefork.core import _events
from prefork.core import _frames as frames
from prefork.core._events import Event
from prefork.core._roster import BrokerPolicy
from prefork.master import _child, _process, _promote, _template
from prefork.master._broker import Broker
from prefork.master._channels import Channels
from prefork.master._signals import reset_in_child
from prefork.master._templates import TemplateLink, TemplatePool
from prefork.worker import Board, Worker


class Children:
    """The children of one master. The tables it reads are the master's own (each broker, its
    worker class or ``"module:attr"``, its policy, its listening sockets), shared, not
    copied: a broker declared or a class preloaded later is seen here too."""

    def __init__(
        self,
        config: MasterConfig,
        brokers: Mapping[str, Broker],
        classes: Mapping[str, builtins.type[Worker] | str],
        policies: Mapping[str, BrokerPolicy],
        sockets: Mapping[str, list[socket.socket]],
        post: Callable[[Event], None],
    ) -> None:
        self._config = config
        self._brokers, self._classes, self._policies = brokers, classes, policies
        self._sockets = sockets
        self._post = post
        self.identity = _process.Identity()  # the user and group workers run as (run() sets)
        self.pids: dict[int, int] = {}  # worker id -> pid, while the worker is not reaped
        self.by_pid: dict[int, int] = {}
        self.channels: Channels | None = None
        self.templates: TemplatePool | None = None  # --template: the templates' links
        self._others: Callable[[], list[int]] = list  # the master's other fds a child closes
        # Each broker's board, mapped here before the first fork of one of its workers or
        # templates, so that all of them share it.
        self.boards: dict[str, Board] = {}
        self._promoting: dict[int, tuple[str, int]] = {}  # worker id -> its template's broker, gen

    def open(self, selector: selectors.BaseSelector, others: Callable[[], list[int]]) -> Channels:
        """Start reading channels and template links on ``selector``; ``others`` gives the
        master's other fds, which every child closes after fork. Returns the channels."""
        self._others = others
        self.channels = Channels(selector, self._post, self._config.max_frame, self.promoted)
        self.templates = TemplatePool(selector, self._post, self.named, self.not_named)
        return self.channels

    def close(self) -> None:
        if self.channels is not None:
            self.channels.close_all()
        if self.templates is not None:
            self.templates.close_all()

    def adopt(self, pids: Mapping[int, int]) -> None:
        """Take on the workers an in-place upgrade handed over (worker id -> pid)."""
        self.pids.update(pids)
        self.by_pid.update((pid, worker_id) for worker_id, pid in pids.items())

    # --- forking ---------------------------------------------------------------------------

    def spawn(self, action: _events.Spawn) -> None:
        worker_id, broker = action.worker_id, action.broker
        if self._policies[broker].template and not action.plain:  # the template names it
            now = time.monotonic()
            if why := self.live_templates().request(worker_id, broker, action.generation, now):
                self._post(_events.SpawnFailed(worker_id, why))
            return
        ours, theirs = socket.socketpair()
        worker = self._classes[broker]
        spec = self.worker_spec(broker, action.generation, worker, worker_id, theirs)

        def before() -> None:
            reset_in_child()
            ours.close()

        try:
            pid = _process.fork_worker(lambda: _child.run(spec), self.close_in_child(), before)
        except OSError as exc:
            ours.close()
            theirs.close()
            self._post(_events.SpawnFailed(worker_id, str(exc)))
            return
        theirs.close()
        self.named(worker_id, pid, ours, None)

    def start_template(self, broker: str, generation: int) -> None:
        self.board_for(broker)  # mapped before the fork: the template's workers share it

        def fork(link: socket.socket, ours: int) -> int:
            spec = _template.TemplateSpec(
                broker=broker,
                generation=generation,
                worker=self._classes[broker],
                options=self._brokers[broker].config.worker_options,
                link=link,
                master_pid=os.getpid(),
                worker_spec=functools.partial(self.worker_spec, broker, generation),
                identity=self.identity,
                name=self._config.name or "",
            )
            close = [*self.close_in_child(), ours]
            return _process.fork_worker(lambda: _template.run(spec), close, reset_in_child)

        self.live_templates().start(broker, generation, fork)

    def worker_spec(
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
            timeout=self._policies[broker].timeout,
            max_frame=self._config.max_frame,
            identity=self.identity,
            name=self._config.name or "",
            board=self.board_for(broker),
            promote=_promote.fork_template if self._policies[broker].refork_after else None,
        )

    def board_for(self, broker: str) -> Board:
        board = self.boards.get(broker)
        if board is None:
            board = self.boards[broker] = Board()
        return board

    def close_in_child(self) -> list[int]:
        """The master's fds a forked worker or template closes."""
        return [*self.live_channels().fds(), *self.live_templates().fds(), *self._others()]

    def named(
        self, worker_id: int, pid: int, channel: socket.socket, dead: _process.Reaped | None
    ) -> None:
        """Worker ``worker_id`` runs as ``pid`` (``dead``: and was reaped already)."""
        self.live_channels().add(worker_id, channel)
        self.pids[worker_id] = pid
        self.by_pid[pid] = worker_id
        self._post(_events.WorkerSpawned(worker_id, pid))
        if dead is not None:
            self.reaped(dead)

    def not_named(self, worker_id: int, reason: str, backoff: bool) -> None:
        self._post(_events.SpawnFailed(worker_id, reason, backoff))

    # --- reaping ----------------------------------------------------------------------------

    def reap(self, dead: _process.Reaped) -> None:
        """``dead`` was reaped: a worker, or else a template, a worker a template has not named
        yet, or not one of ours (we may be PID 1)."""
        if dead.pid in self.by_pid:
            self.reaped(dead)
        else:
            self.live_templates().reaped(dead, time.monotonic())

    def reaped(self, dead: _process.Reaped) -> None:
        worker_id = self.by_pid.pop(dead.pid)
        del self.pids[worker_id]
        # Its slot in its broker's board; in the other boards no live worker uses that slot
        # (but for a rare collision of ids: that worker writes its value again on its next
        # change).
        for board in self.boards.values():
            board.clear(board.slot_of(worker_id))
        self._promoting.pop(worker_id, None)
        self.live_channels().remove(worker_id)
        self._post(_events.WorkerExited(worker_id, dead.exit_code, dead.signal))

    # --- what the master does to a worker -----------------------------------------------------

    def signal(self, worker_id: int, signum: int) -> None:
        # An action may name a worker reaped a moment ago (its exit is still queued as an
        # event): nothing to signal then; the supervisor hears of the exit next. A worker a
        # template has not named yet gets it once named.
        pid = self.pids.get(worker_id)
        if pid is None:
            if self.templates is not None:
                self.templates.signal(worker_id, signum)
        else:
            with contextlib.suppress(ProcessLookupError):  # died, not reaped yet
                os.kill(pid, signum)

    def terminate(self, worker_id: int, replaced: bool) -> None:
        """A STOP frame tells the worker why it leaves (a signal cannot); a worker whose
        channel is gone gets SIGTERM. The frame alone, not both: whichever the worker saw
        first would decide, and a reload must close WebSockets with 1012 every time."""
        channels = self.channels
        if channels is not None and channels.open(worker_id):
            body = {"replaced": replaced}
            channels.send([worker_id], frames.encode(frames.STOP, body))
        else:
            self.signal(worker_id, signal.SIGTERM)

    def send(self, worker_ids: Iterable[int], obj: Any) -> None:
        """A MESSAGE frame to each of ``worker_ids`` (before the loop runs: to nobody)."""
        frame = frames.encode(frames.MESSAGE, obj, max_frame=self._config.max_frame)
        if self.channels is not None:
            self.channels.send(list(worker_ids), frame)

    def measure_memory(self, worker_ids: tuple[int, ...]) -> None:
        measured = []
        for worker_id in worker_ids:
            pid = self.pids.get(worker_id)
            rss = None if pid is None else _process.rss(pid)
            if rss is not None:
                measured.append((worker_id, rss))
        self._post(_events.MemoryMeasured(tuple(measured)))

    # --- refork (--refork-after) ------------------------------------------------------------

    def promote(self, action: _events.Promote) -> None:
        """Ask a worker to fork the template of ``action.generation`` from itself; it answers
        with a PROMOTED frame (``promoted``)."""
        worker_id, generation = action.worker_id, action.generation
        channels = self.channels
        if channels is None or not channels.open(worker_id):
            why = {"generation": generation, "error": "its channel is closed"}
            self._post(_events.MessageReceived(worker_id, frames.PROMOTED, why))
            return
        self._promoting[worker_id] = (action.broker, generation)
        channels.send([worker_id], frames.encode(frames.PROMOTE, {"generation": generation}))

    def promoted(self, worker_id: int, body: Any, fds: list[int]) -> Any:
        """A worker's PROMOTED frame, with the fds its read brought: keep the link of the
        template it forked if it was asked to and the template is the master's child (a
        worker cannot make the master supervise, or kill, another process); returns the body
        the supervisor hears (an error in place of a pid refused)."""
        socks = _sockets_of(fds)
        asked = self._promoting.pop(worker_id, None)
        said = body if isinstance(body, dict) else {}
        generation, pid = said.get("generation"), said.get("pid")
        why = ""
        if not isinstance(pid, int) or isinstance(pid, bool):
            why = str(said.get("error") or "it named no template")
        elif asked is None or asked[1] != generation:
            why = f"it was not asked to fork the template of generation {generation}"
        elif len(socks) != 1:
            why = "the template's link did not come with the answer"
        elif self.live_templates().reaped_already(pid):
            why = f"the template it forked (pid {pid}) exited at once"
        elif _process.parent(pid) != os.getpid():
            why = f"process {pid} is not a child of the master"
        if why or asked is None or not isinstance(pid, int):
            for sock in socks:
                sock.close()
            return {"generation": generation, "error": why}
        why = self.live_templates().adopt(asked[0], asked[1], pid, socks[0])
        return {"generation": generation, "error": why} if why else said

    def template_pids(self) -> dict[tuple[str, int], int]:
        """Each template's pid, by broker and generation (a live mapping once open)."""
        return {} if self.templates is None else self.templates.pids

    def standbys(self) -> dict[tuple[str, int], int]:
        """Each template's standby worker's pid, by broker and generation (live once open)."""
        return {} if self.templates is None else self.templates.standbys

    def live_channels(self) -> Channels:
        assert self.channels is not None
        return self.channels

    def live_templates(self) -> TemplatePool:
        assert self.templates is not None
        return self.templates

    def read_link(self, link: TemplateLink) -> None:
        self.live_templates().read(link)


def _sockets_of(fds: list[int]) -> list[socket.socket]:
    """The sockets of ``fds``; an fd that is not a socket is closed and left out."""
    socks = []
    for fd in fds:
        try:
            socks.append(socket.socket(fileno=fd))
        except OSError:
            os.close(fd)
    return socks

"""The worker side: after fork, load the worker class, run it on uvloop, talk to the master.

Heartbeats are sent by a timer on the worker's own event loop, so a loop that is blocked stops
them and the master notices (a side thread would keep beating for a wedged loop).
"""

from __future__ import annotations

import asyncio
import faulthandler
import importlib
import importlib.util
import inspect
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvloop

from prefork.core import _frames as frames
from prefork.core._options import ConfigError
from prefork.master import _process
from prefork.master._process import Identity
from prefork.master._tracebacks import user_traceback
from prefork.worker import Board, Worker

MAX_ERROR = 16384  # the last characters of a failed start's traceback sent to the master
DUMP_SIGNAL = signal.SIGUSR2  # in a worker: print every thread's stack (faulthandler)
log = logging.getLogger("prefork.worker")


Promoter = Callable[["WorkerSpec", type[Worker], int], tuple[dict[str, Any], socket.socket | None]]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a forked worker needs to start."""

    broker: str
    worker: type | str
    worker_id: int
    generation: int
    channel: socket.socket
    sockets: list[socket.socket]
    backlog: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    heartbeat: float = 0.0
    graceful_timeout: float = 0.0
    timeout: float = 0.0  # the broker's --timeout (a worker may bound its own threads by it)
    max_frame: int = frames.DEFAULT_MAX_FRAME
    identity: Identity = field(default_factory=Identity)
    name: str = ""  # --name: workers show as NAME:BROKER
    board: Board | None = None  # shared with the broker's other workers (``Worker.board``)
    # Forked by a template: waits until the master adopted it (and dies with the master from
    # then on), called once the worker started, before it says it is ready.
    adopted: Callable[[], None] | None = None
    # --refork-after: forks the template of a generation from this worker (``_promote.py``),
    # giving the PROMOTED frame's body and the master's end of the template's link.
    promote: Promoter | None = None


def check_worker(spec: type | str, options: Mapping[str, Any]) -> type[Worker] | str:
    """Raise ``ConfigError`` unless ``spec`` is a Worker subclass that accepts ``options``, or
    names a module that exists.

    The module is located, not imported: it is imported after fork, so that a reload picks up
    new code (its options are checked there).
    """
    if isinstance(spec, type):
        if not issubclass(spec, Worker):
            raise ConfigError(f"worker must be a Worker subclass or 'module:attr', got {spec!r}")
        spec.check_options(options)
        return spec
    module = spec.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"worker {spec!r} cannot be imported: {exc}") from None
    if found is None:
        raise ConfigError(
            f"worker {spec!r} cannot be imported: no module named {module!r} "
            "(check the name and sys.path)"
        )
    return spec


def prepares_template(spec: type | str) -> bool:
    """Whether a template of this worker class imports anything (``--template auto`` starts
    none otherwise): whether it overrides ``Worker.prepare_template``. A ``"module:attr"``
    worker is imported only after fork, so the master cannot tell: False (``template=True``
    gives it templates)."""
    if not isinstance(spec, type):
        return False
    prepare = getattr(spec, "prepare_template", None)
    return getattr(prepare, "__func__", None) is not _PREPARE_NOTHING


_PREPARE_NOTHING = Worker.prepare_template.__func__  # type: ignore[attr-defined]


def load_worker_class(spec: type | str) -> type[Worker]:
    """Import ``"module:attr"`` (or take the class as is); raise if it is not a Worker."""
    if isinstance(spec, type):
        cls: object = spec
    else:
        module_name, _, attr = spec.partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Worker)):
        raise TypeError(f"{spec!r} is {cls!r}, not a prefork.Worker subclass")
    return cls


def run(spec: WorkerSpec) -> int:
    """Run one worker to its end; returns the process exit code."""
    spec.identity.assume()
    prefix = spec.name or "prefork"
    _process.set_title(
        f"{prefix}: {spec.broker} worker {spec.worker_id} gen {spec.generation}",
        f"{prefix}:{spec.broker}",
    )
    faulthandler.register(DUMP_SIGNAL, file=sys.stderr, all_threads=True)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(_serve(spec))


class _Link(asyncio.Protocol):
    """The worker's end of the master channel."""

    def __init__(self, max_frame: int, spec: WorkerSpec | None = None) -> None:
        self.decoder = frames.Decoder(max_frame, frames.TO_WORKER)
        self.max_frame = max_frame
        self.spec = spec
        self.worker: Worker | None = None
        self.transport: asyncio.Transport | None = None
        self.leaving: asyncio.Task[None] | None = None  # prepare_for_shutdown, once started

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is duck-typed

    def send_frame(self, kind: str, body: Any = None) -> None:
        assert self.transport is not None
        self.transport.write(frames.encode(kind, body, max_frame=self.max_frame))

    def data_received(self, data: bytes) -> None:
        assert self.worker is not None
        for message in self.decoder.feed(data):
            if message.kind == frames.STOP:
                body = message.body
                self.leave(replaced=isinstance(body, dict) and body.get("replaced") is True)
                continue
            if message.kind == frames.PROMOTE:
                self.promote(message.body)
                continue
            try:
                self.worker.on_message(message.body)
            except Exception:
                log.exception("[%s] on_message raised", self.worker.type)

    def leave(self, *, replaced: bool) -> None:
        """Run the worker's ``prepare_for_shutdown`` (once: a second request changes nothing)."""
        worker = self.worker
        assert worker is not None
        if self.leaving is not None:
            return
        worker.replaced = replaced
        self.leaving = asyncio.get_running_loop().create_task(worker.prepare_for_shutdown())
        self.leaving.add_done_callback(lambda t: _after_shutdown(worker, t))

    def promote(self, body: Any) -> None:
        """Fork the template the master asked for and answer PROMOTED (``_promote.py``)."""
        spec, worker = self.spec, self.worker
        generation = body.get("generation") if isinstance(body, dict) else None
        if not isinstance(generation, int):
            return  # not what the master sends
        said: dict[str, Any] = {"generation": generation, "error": "not a template broker"}
        theirs = None
        if spec is not None and spec.promote is not None and worker is not None:
            said, theirs = spec.promote(spec, type(worker), generation)
        asyncio.get_running_loop().create_task(_answer(self, said, theirs))

    def connection_lost(self, exc: Exception | None) -> None:
        # The master is gone (PR_SET_PDEATHSIG covers a SIGKILLed master; this covers the rest).
        os._exit(1)


async def _answer(link: _Link, said: dict[str, Any], theirs: socket.socket | None) -> None:
    """Send PROMOTED with the template's link (SCM_RIGHTS), once what the transport holds
    went out: the fd must come with this frame's bytes, not in the middle of another's."""
    if theirs is None:
        link.send_frame(frames.PROMOTED, said)  # no fd: the transport's order is enough
        return
    try:
        await _flush(link)
        frame = frames.encode(frames.PROMOTED, said, max_frame=link.max_frame)
        assert link.spec is not None and link.transport is not None
        try:
            sent = socket.send_fds(link.spec.channel, [frame], [theirs.fileno()])
        except BlockingIOError:  # the master reads nothing for now: no link then
            sent = 0
            said = {k: v for k, v in said.items() if k != "pid"} | {"error": "channel full"}
            frame = frames.encode(frames.PROMOTED, said, max_frame=link.max_frame)
        link.transport.write(frame[sent:])
    finally:
        theirs.close()


async def _serve(spec: WorkerSpec) -> int:
    loop = asyncio.get_running_loop()
    link = _Link(spec.max_frame, spec)
    await loop.connect_accepted_socket(lambda: link, sock=spec.channel)
    try:
        worker = await _start(spec, link)
    except Exception as exc:
        # Sent to the master, which prints it once however many workers fail the same way:
        # the user's frames only (prefork's say nothing about their mistake).
        link.send_frame(frames.FAILED, user_traceback(exc)[-MAX_ERROR:])
        await _flush(link)
        return 1
    if spec.adopted is not None:
        spec.adopted()
    if worker.auto_ready:
        worker.ready()
    assert worker._exit is not None
    code = await worker._exit
    await _flush(link)
    return code


async def _start(spec: WorkerSpec, link: _Link) -> Worker:
    """Load the worker class, make the worker and run its ``init()``; raises what they raise."""
    loop = asyncio.get_running_loop()
    cls = load_worker_class(spec.worker)
    worker = cls(
        type=spec.broker,
        id=spec.worker_id,
        generation=spec.generation,
        sockets=spec.sockets,
        backlog=spec.backlog,
        graceful_timeout=spec.graceful_timeout,
        timeout=spec.timeout,
        options=spec.options,
        channel=link,
        board=spec.board,
    )
    link.worker = worker
    worker._exit = loop.create_future()
    # The master sends a STOP frame; SIGTERM comes from anyone else (or a master whose
    # channel to us broke): a stop, not a replacement.
    loop.add_signal_handler(signal.SIGTERM, lambda: link.leave(replaced=False))
    if spec.heartbeat:
        _beat(loop, link, spec.heartbeat)
    started = worker.init()
    if inspect.isawaitable(started):
        await started
    return worker


def _after_shutdown(worker: Worker, task: asyncio.Task[None]) -> None:
    if task.exception() is not None:
        log.error("[%s] prepare_for_shutdown raised", worker.type, exc_info=task.exception())
        worker.shutdown(1)


def _beat(loop: asyncio.AbstractEventLoop, link: _Link, interval: float) -> None:
    link.send_frame(frames.HEARTBEAT)
    loop.call_later(interval, _beat, loop, link, interval)


async def _flush(link: _Link) -> None:
    """Let queued frames (a last report, say) reach the master before the process exits."""
    assert link.transport is not None
    for _ in range(100):
        if not link.transport.get_write_buffer_size():
            return
        await asyncio.sleep(0.01)

"""Worker types for the process tests, imported after fork as ``"workers:Name"``.

``Echo`` answers a line protocol on the broker's first socket, so a test can steer a worker
from outside: ``ping`` (answers ``pong <pid> <generation> <version>``), ``send <json>``,
``report <json>``, ``retire``, ``hang``, ``flood``, ``stall <seconds>``, ``exit <code>``,
``bigsend-exit``, ``raw <hex>`` (writes those bytes on the channel, frame or not),
``fork`` (starts a child that keeps the listening socket and sleeps; answers
its pid). ``VERSION`` comes from the module named by the ``version_module`` option, a
file the test rewrites to check that a reload picks up new code.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import time
from typing import Any

from prefork import Worker
from prefork.core import _frames as frames


class Echo(Worker):
    """A TCP line server on ``self.sockets[0]``; graceful on SIGTERM."""

    async def init(self) -> None:
        self.version = "1"
        name = self.options.get("version_module")
        if name:
            module = importlib.import_module(name)  # raises if the test broke the file
            self.version = str(module.VERSION)
        self.clients: set[asyncio.Task[Any]] = set()
        self.server = await asyncio.start_server(self.handle, sock=self.sockets[0])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.clients.add(task)
        task.add_done_callback(self.clients.discard)
        try:
            while line := await reader.readline():
                answer = self.command(line.decode().strip())
                writer.write((answer + "\n").encode())
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def command(self, line: str) -> str:
        verb, _, arg = line.partition(" ")
        if verb == "ping":
            return f"pong {os.getpid()} {self.generation} {self.version}"
        if verb == "send":
            self.send(json.loads(arg))
        elif verb == "report":
            self.report(json.loads(arg))
        elif verb == "retire":
            self.retire()
        elif verb == "hang":
            _hang_forever()
        elif verb == "flood":
            # After the answer is written: the master kills the flooder at its first frame.
            asyncio.get_running_loop().call_soon(self.flood)
        elif verb == "stall":
            self.send({"blast": 4, "size": 300_000})
            time.sleep(float(arg))  # blocks the loop: the master's frames pile up
        elif verb == "raw":  # what a broken or hostile worker could write to the master
            # After the answer is written: a frame the master refuses ends this worker at once.
            transport = self._channel.transport  # type: ignore[attr-defined]
            asyncio.get_running_loop().call_soon(transport.write, bytes.fromhex(arg))
        elif verb == "fork":
            child = os.fork()
            if child == 0:  # a grandchild of the master, holding the inherited listener
                time.sleep(60)
                os._exit(0)
            return f"forked {child}"
        elif verb == "exit":
            os._exit(int(arg))
        elif verb == "bigsend-exit":  # bigsend-exit SIZE [MASTER_SLEEP]
            size, _, master_sleep = arg.partition(" ")
            if master_sleep:
                self.send({"sleep": float(master_sleep)})
            self.send("x" * int(size))
            self.shutdown()
            self.shutdown()  # a second call changes nothing
        elif verb == "stall-exit":  # ask for frames, then die without reading them
            self.send({"blast": 4, "size": 300_000})
            time.sleep(float(arg))
            os._exit(4)
        return f"ok {os.getpid()}"

    def flood(self) -> None:
        """Write frames claiming to be far larger than the master accepts, over and over."""
        transport = self._channel.transport  # type: ignore[attr-defined]
        junk = frames.HEADER.pack(1 << 30) + b"\0" * 65536
        for _ in range(64):
            transport.write(junk)

    def on_message(self, obj: Any) -> None:
        if obj == "raise":
            raise RuntimeError("on_message was asked to raise")
        if isinstance(obj, str) and len(obj) > 1000:
            obj = {"len": len(obj)}
        self.send({"got": obj})

    async def prepare_for_shutdown(self) -> None:
        self.server.close()
        # A connection accepted in the loop's last turn reaches ``handle`` two turns later
        # (uvloop's connection_made, then its task's first step): leaving before that closed
        # it unanswered, a reset for a client of a reload test (seen on a busy CI machine).
        for _ in range(3):
            await asyncio.sleep(0)
        if self.clients:  # connections in flight finish (clients send one line and leave)
            await asyncio.wait(self.clients, timeout=5)
        delay = float(self.options.get("shutdown_delay", 0))
        if delay:
            self.send({"stopping": os.getpid()})
            await asyncio.sleep(delay)
        if self.options.get("shutdown_raises"):
            raise RuntimeError("prepare_for_shutdown was asked to raise")
        self.shutdown()


def _hang_forever() -> None:
    time.sleep(3600)


class Stubborn(Echo):
    """Ignores SIGTERM: only the master's SIGKILL after graceful_timeout ends it."""

    async def prepare_for_shutdown(self) -> None:
        return None


class Jobs(Worker):
    """No socket: does a job every ``interval`` seconds and reports progress to the master."""

    def init(self) -> None:
        self.done = 0
        self.loop = asyncio.get_running_loop()
        self.loop.call_later(0, self.tick)

    def tick(self) -> None:
        self.done += 1
        self.send({"progress": self.done})
        self.loop.call_later(float(self.options.get("interval", 0.2)), self.tick)

    def on_message(self, obj: Any) -> None:
        self.send({"got": obj})


class LateReady(Worker):
    """Ready only some time after ``init()`` returns."""

    auto_ready = False

    def init(self) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, self.ready)
        loop.call_later(0.3, self.ready)  # a second call changes nothing


class Idle(Worker):
    """The base class as is: nothing to do, ready at once."""


class Broken(Worker):
    """Can never boot: ``init()`` raises."""

    def init(self) -> None:
        raise RuntimeError("this worker cannot boot")


class BootsUntil(Worker):
    """Boots until the file named by the ``until`` option exists; then ``init()`` raises."""

    def init(self) -> None:
        if os.path.exists(self.options["until"]):
            raise RuntimeError("this worker cannot boot any more")


NotAWorker = object()


class Templated(Echo):
    """``Echo`` for templates: the template imports ``version_module`` (so the workers forked
    from it answer its ``VERSION`` without importing it, and ``imported`` answers the worker's
    pid and that of the process that imported it: the module's ``IMPORTED_IN``), and each
    hook appends ``<hook> <pid>`` to the file named by the ``hooks`` option. The hook named
    by ``fail`` raises."""

    @classmethod
    def prepare_template(cls, options: Any) -> None:
        _hook(options, "prepare_template")
        if name := options.get("version_module"):
            importlib.import_module(name)

    @classmethod
    def before_fork(cls, options: Any) -> None:
        _hook(options, "before_fork")

    @classmethod
    def after_fork(cls, options: Any) -> None:
        _hook(options, "after_fork")

    def command(self, line: str) -> str:
        if line == "imported":
            return f"{os.getpid()} {sys.modules[self.options['version_module']].IMPORTED_IN}"
        return super().command(line)


def _hook(options: Any, name: str) -> None:
    if options.get("hooks"):
        with open(options["hooks"], "a") as f:
            f.write(f"{name} {os.getpid()}\n")
    if options.get("fail") == name:
        raise RuntimeError(f"{name} was asked to raise")

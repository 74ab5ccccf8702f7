"""Two worker types in one master: the okanjo-app-broker demo, in prefork.

- ``echo``: a TCP echo server, two workers sharing one listening socket.
- ``jobs``: one worker with no socket that does a job every second and sends its progress to
  the master (``self.send``); the master answers through ``broker.send`` every fifth job.

Run it, then talk to it::

    python examples/brokers.py [ADDRESS]      # ADDRESS defaults to $ECHO_LISTEN or 127.0.0.1:8000
    printf 'hello\\n' | nc 127.0.0.1 8000     # answered by one of the echo workers
    kill -HUP  <pid>     # rolling reload: new workers first, old ones leave once they are ready
    kill -TERM <pid>     # drain: workers finish and leave; the master keeps the socket bound
    kill -USR2 <pid>     # resume after a drain
    kill -TTIN <pid>     # one worker more (every broker); -TTOU: one fewer
    kill -INT  <pid>     # stop: drain, then exit 0 (a second -INT stops at once)

The master prints its pid first. Every broker event is printed as one line.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from prefork import ConfigError, Master, ReloadResult, Worker, WorkerExit, WorkerInfo


class Echo(Worker):
    """Echo every line back, prefixed with this worker's pid."""

    async def init(self) -> None:
        self.clients: set[asyncio.Task[Any]] = set()
        self.server = await asyncio.start_server(self.handle, sock=self.sockets[0])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.clients.add(task)
        task.add_done_callback(self.clients.discard)
        try:
            while line := await reader.readline():
                writer.write(f"[{os.getpid()}] ".encode() + line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def prepare_for_shutdown(self) -> None:
        self.server.close()  # stop accepting: the other workers take the new connections
        if self.clients:  # give open connections a few seconds to end
            await asyncio.wait(self.clients, timeout=self.options.get("linger", 5.0))
        self.shutdown()


class Jobs(Worker):
    """A background worker: no socket, a job every ``interval`` seconds."""

    def init(self) -> None:
        self.done = 0
        self.loop = asyncio.get_running_loop()
        self.loop.call_later(self.options.get("interval", 1.0), self.work)

    def work(self) -> None:
        self.done += 1
        self.send({"job": self.done})
        self.loop.call_later(self.options.get("interval", 1.0), self.work)

    def on_message(self, obj: Any) -> None:
        print(f"jobs worker {os.getpid()} got {obj!r} from the master", flush=True)


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str]) -> int:
    address = argv[1] if len(argv) > 1 else os.environ.get("ECHO_LISTEN", "127.0.0.1:8000")
    try:
        master = Master(graceful_timeout=10)
        echo = master.broker("echo", Echo, workers=2, listen=[address], linger=5.0)
        jobs = master.broker("jobs", Jobs, workers=1, interval=1.0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def on_message(msg: Any, worker: WorkerInfo) -> None:
        say(f"worker_message {worker.type} pid={worker.pid}: {msg}")
        if isinstance(msg, dict) and msg.get("job", 0) % 5 == 0:
            jobs.send({"ack": msg["job"]})

    def on_exit(kind: str) -> Any:
        def show(x: WorkerExit) -> None:
            how = f"code {x.code}" if x.signal is None else f"signal {x.signal}"
            say(f"{kind} {x.type} pid={x.pid} gen={x.generation} {how} after {x.uptime:.1f}s")

        return show

    def on_reload(kind: str) -> Any:
        def show(r: ReloadResult) -> None:
            why = f": {r.reason}" if r.reason else ""
            say(f"{kind} {r.type} gen={r.generation} replaced={r.replaced}{why}")

        return show

    for broker in (echo, jobs):
        broker.on("worker_message", on_message)
        broker.on("worker_crash", on_exit("worker_crash"))
        broker.on("worker_exit", on_exit("worker_exit"))
        broker.on("worker_ready", lambda w: say(f"worker_ready {w.type} pid={w.pid}"))
        broker.on("reload_done", on_reload("reload_done"))
        broker.on("reload_failed", on_reload("reload_failed"))

    say(f"master pid={os.getpid()} echo on {address}")
    try:
        return master.run()
    except ConfigError as exc:  # the address is in use, say: nothing was forked
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

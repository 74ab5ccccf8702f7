"""WebSocket echo messages/s of prefork's HTTP worker against uvicorn (wsproto, websockets and
websockets-sansio), one worker each.

    python benchmarks/ws_bench.py [--rounds 3] [--duration 5] [--connections 64] [--size 64]
                                  [--clients 1] [--only NAME...]

Every server serves examples/ws_echo.py on a port the OS picks, pinned to one CPU; the load
generator, this script's own asyncio client (on uvloop when installed) in --clients processes,
is pinned to the other. It opens --connections WebSockets with a raw upgrade handshake that
offers no extension (so no server compresses), then each connection runs a closed loop: one
masked --size-byte text frame out, wait for its echo (checked byte for byte), repeat. The
servers take turns over several rounds in one run so that machine noise hits all of them
alike. Prints per server: the median messages/s and each round's figure; messages per
CPU-second of the server (less sensitive to noise); the share of one CPU that the server and
the client each used (a client near 100% would be the bottleneck); "others", the share of the
two CPUs that other processes and interrupts took (noise); the ratios against uvicorn's
wsproto and websockets implementations. Then whatever a server wrote to its stdout or stderr
(all run at --log-level warning). uvicorn runs with --http h11 and --loop uvloop. A peer that
is not installed is skipped and named.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib.util
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from _proc import children, cpu_seconds, free_port, idle_seconds, stop_session
from _rounds import alternated
from _wire import frame

ROOT = Path(__file__).resolve().parent.parent
APP = "examples.ws_echo:app"
#: What each server needs importable, besides itself.
NEEDS = {
    "prefork": ["prefork"],
    # prefork from the source tree $PREFORK_BASE, for an A/B in one run (skipped when unset):
    # git archive <commit> prefork | tar -x -C /tmp/base; PREFORK_BASE=/tmp/base python ...
    "prefork-base": ["prefork"],
    "uvicorn-wsproto": ["uvicorn", "wsproto", "uvloop"],
    "uvicorn-websockets": ["uvicorn", "websockets", "uvloop"],
    "uvicorn-websockets-sansio": ["uvicorn", "websockets", "uvloop"],
}
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
MASK = b"\x37\xfa\x21\x3d"  # one fixed masking key: the frame is built once
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def servers(port_of: dict[str, int]) -> dict[str, list[str]]:
    """The command of each server."""
    py = sys.executable
    uvicorn = [
        py, "-m", "uvicorn", "--workers", "1", "--log-level", "warning", "--http", "h11",
        "--loop", "uvloop", "--host", "127.0.0.1",
    ]  # fmt: skip
    return {
        "prefork": [
            py, "-m", "prefork", "serve", "--workers", "1", "--log-level", "warning",
            "--bind", f"127.0.0.1:{port_of['prefork']}", APP,
        ],
        "prefork-base": [
            py, "-m", "prefork", "serve", "--workers", "1", "--log-level", "warning",
            "--bind", f"127.0.0.1:{port_of['prefork-base']}", APP,
        ],
        "uvicorn-wsproto": [
            *uvicorn, "--ws", "wsproto", "--port", str(port_of["uvicorn-wsproto"]), APP,
        ],
        "uvicorn-websockets": [
            *uvicorn, "--ws", "websockets", "--port", str(port_of["uvicorn-websockets"]), APP,
        ],
        # What uvicorn says `--ws websockets` will become (websockets' Sans-I/O core).
        "uvicorn-websockets-sansio": [
            *uvicorn, "--ws", "websockets-sansio",
            "--port", str(port_of["uvicorn-websockets-sansio"]), APP,
        ],
    }  # fmt: skip


# -- frames -------------------------------------------------------------------------------


def message(size: int) -> bytes:
    """``size`` bytes of ASCII text: a valid UTF-8 text message."""
    return bytes(ord("a") + i % 26 for i in range(size))


# -- the load generator (one process of it) -----------------------------------------------


@dataclass
class Tally:
    """What one client process counted in its window."""

    echoes: int
    seconds: float
    cpu: float  # CPU seconds of the client process


class Load:
    """What the connections of one client process share."""

    def __init__(self, port: int, payload: bytes) -> None:
        self.port = port
        self.payload = payload
        self.request = frame(TEXT, payload, MASK)  # prebuilt once, sent as is
        self.echo = frame(TEXT, payload, None)  # what the server must answer, byte for byte
        self.running = False
        self.errors: list[str] = []


class EchoClient(asyncio.Protocol):
    """One WebSocket: handshake, then one message in flight at a time while ``load.running``;
    after that, the last echo is awaited and the connection closed with 1000."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.key = base64.b64encode(os.urandom(16))
        self.phase = "handshake"  # -> "open" -> "closing" -> "closed"
        self.head = bytearray()  # the handshake response, until its blank line
        self.buf = bytearray()  # frames split across reads
        self.echoes = 0
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.load.port, self.key)
        )

    def data_received(self, data: bytes) -> None:
        if self.phase == "open" and not self.buf and data == self.load.echo:
            self._echoed()  # the usual read: exactly one whole echo
        elif self.phase == "handshake":
            self._handshake(data)
        elif self.phase != "closed":
            self.buf += data
            self._frames()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase != "closing":
            self._fail(f"the server closed the connection ({exc or 'EOF'}) while {self.phase}")
        self.phase = "closed"
        if not self.closed.done():
            self.closed.set_result(None)

    def start(self) -> None:
        self.transport.write(self.load.request)

    def _echoed(self) -> None:
        self.echoes += 1
        if self.load.running:
            self.transport.write(self.load.request)
        else:  # the server closes the TCP connection after its close frame
            self.transport.write(frame(CLOSE, (1000).to_bytes(2, "big"), MASK))
            self.phase = "closing"

    def _handshake(self, data: bytes) -> None:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.head[:end]).split(b"\r\n")
        rest = self.head[end + 4 :]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest())
        if lines[0].split()[1:2] != [b"101"]:
            self._fail(f"the handshake was answered {lines[0]!r}")
        elif headers.get(b"sec-websocket-accept") != accept:
            self._fail(f"wrong Sec-WebSocket-Accept: {headers.get(b'sec-websocket-accept')!r}")
        elif b"sec-websocket-extensions" in headers:
            self._fail(f"an extension nobody offered: {headers[b'sec-websocket-extensions']!r}")
        else:
            self.phase = "open"
            self.opened.set_result(None)
            if rest:
                self.buf += rest
                self._frames()

    def _frames(self) -> None:
        """Take every whole frame from ``buf``: echoes, a ping (answered), our close's answer."""
        buf = self.buf
        while len(buf) >= 2 and self.phase != "closed":
            first, second = buf[0], buf[1]
            size, start = second & 0x7F, 2
            if second & 0x80:
                self._fail("a masked frame from the server")
                return
            if size >= 126:
                start = 4 if size == 126 else 10
                if len(buf) < start:
                    return
                size = int.from_bytes(buf[2:start], "big")
            if len(buf) < start + size:
                return
            payload = bytes(buf[start : start + size])
            del buf[: start + size]
            if first == 0x80 | TEXT and payload == self.load.payload and self.phase == "open":
                self._echoed()
            elif first == 0x80 | PING:
                self.transport.write(frame(PONG, payload, MASK))
            elif first == 0x80 | PONG:
                pass
            elif first == 0x80 | CLOSE and self.phase == "closing":
                pass  # the answer to our close frame
            else:
                self._fail(f"unexpected frame {first:#04x} {payload[:70]!r} while {self.phase}")

    def _fail(self, why: str) -> None:
        self.load.errors.append(why)
        self.phase = "closed"
        if not self.opened.done():
            self.opened.set_exception(RuntimeError(why))
        self.transport.abort()


async def generate(
    pipe: Connection, port: int, connections: int, size: int, duration: float
) -> None:
    """Open the connections, say "ready", wait for "go", run the closed loops for
    ``duration`` seconds and say "done" with the count; then close every connection cleanly
    and say "closed" with any error found on the way."""
    loop = asyncio.get_running_loop()
    load = Load(port, message(size))
    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(lambda: EchoClient(load), "127.0.0.1", port)
        clients.append(client)
    await asyncio.gather(*(c.opened for c in clients))
    pipe.send(("ready",))
    pipe.recv()  # "go": blocking the loop is fine, every connection is idle
    cpu, began = time.process_time(), time.perf_counter()
    load.running = True
    for client in clients:
        client.start()
    await asyncio.sleep(duration)
    echoes = sum(c.echoes for c in clients)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    load.running = False
    pipe.send(("done", Tally(echoes, seconds, cpu), load.errors[:3]))
    await asyncio.wait([c.closed for c in clients], timeout=10)
    unclosed = sum(not c.closed.done() for c in clients)
    if unclosed:
        load.errors.append(f"{unclosed} connections not closed by the server 10 s after ours")
    pipe.send(("closed", load.errors[:3]))


def client_process(
    pipe: Connection, port: int, connections: int, size: int, duration: float
) -> None:
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(generate(pipe, port, connections, size, duration))
    except Exception as exc:
        pipe.send(("error", repr(exc)))


# -- the servers and the runs -------------------------------------------------------------


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """This process on ``cpu`` for a while, so that the children it starts stay there."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class Server:
    """A server in its own session on ``cpu``, its stdout and stderr in a file."""

    def __init__(self, name: str, cmd: list[str], port: int, cpu: int | None, logs: Path) -> None:
        self.name = name
        self.port = port
        self.cpu = cpu
        self.log = logs / f"{name}.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cwd = ROOT
        if name == "prefork-base":  # from elsewhere: `python -m` puts its cwd first
            env["PYTHONPATH"] = os.pathsep.join([os.environ["PREFORK_BASE"], str(ROOT)])
            cwd = logs
        with pinned(cpu), open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll with a plain GET until the app answers 200 "ok"."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.text()}"
                )
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    reply = b""
                    while chunk := sock.recv(4096):
                        reply += chunk
                if reply.startswith(b"HTTP/1.1 200") and b"ok" in reply.partition(b"\r\n\r\n")[2]:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer in {timeout} s")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """The CPU time of the server and its workers."""
        pid = self.proc.pid
        return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children(pid))

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_session(self.proc)


@dataclass
class Run:
    rate: float  # echoed messages per second
    server_cpu: float  # share of one core
    others: float  # share of the benchmark's CPUs that other processes and interrupts used
    client_cpu: float  # share of one core, all client processes together


def expect(pipe: Connection, kind: str, timeout: float = 30.0) -> Any:
    if not pipe.poll(timeout):
        raise RuntimeError(f"a client process said nothing for {timeout} s (waiting for {kind})")
    reply = pipe.recv()
    if reply[0] != kind:
        raise RuntimeError(f"a client process failed: {reply[1:]}")
    return reply


def measure(server: Server, args: argparse.Namespace, duration: float, cpus: list[int]) -> Run:
    """One run: --clients processes (on this process's CPU) share the connections; ``cpus``
    are those the server and the client use, watched for what else runs there."""
    context = multiprocessing.get_context("fork")
    shares = [args.connections // args.clients] * args.clients
    shares[0] += args.connections % args.clients
    pipes, procs = [], []
    try:
        for share in shares:
            mine, theirs = context.Pipe()
            proc = context.Process(
                target=client_process,
                args=(theirs, server.port, share, args.size, duration),
                daemon=True,
            )
            proc.start()
            pipes.append(mine)
            procs.append(proc)
        for pipe in pipes:
            expect(pipe, "ready")
        server_cpu, began = server.cpu_seconds(), time.perf_counter()
        idle = idle_seconds(cpus)
        for pipe in pipes:
            pipe.send("go")
        done = [expect(pipe, "done", duration + 30) for pipe in pipes]
        seconds = time.perf_counter() - began
        server_cpu = server.cpu_seconds() - server_cpu
        idle = idle_seconds(cpus) - idle
        errors = [e for _, _, errors in done for e in errors]
        errors += [e for pipe in pipes for e in expect(pipe, "closed")[1]]
    finally:
        for proc in procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()
                proc.join()
    if errors:
        raise RuntimeError(f"{server.name}: {errors[0]}")
    tallies: list[Tally] = [tally for _, tally, _ in done]
    client_cpu = sum(t.cpu for t in tallies)
    return Run(
        rate=sum(t.echoes / t.seconds for t in tallies),
        server_cpu=server_cpu / seconds,
        client_cpu=client_cpu / seconds,
        others=1 - (idle + server_cpu + client_cpu) / (seconds * len(cpus)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="bytes per text message")
    parser.add_argument("--clients", type=int, default=1, help="load generator processes")
    parser.add_argument("--only", nargs="*", help="servers to run (default: all found)")
    args = parser.parse_args(argv)
    names = [n for n in NEEDS if not args.only or n in args.only]
    for name in list(names):
        absent = [m for m in NEEDS[name] if importlib.util.find_spec(m) is None]
        if name == "prefork-base" and not os.environ.get("PREFORK_BASE"):
            absent = ["$PREFORK_BASE (a source tree to compare with)"]
        if absent:
            print(f"skipping {name}: {', '.join(absent)} not installed", file=sys.stderr)
            names.remove(name)
    cpus = sorted(os.sched_getaffinity(0))[:2]
    server_cpu = client_cpu = None
    if len(cpus) >= 2:
        server_cpu, client_cpu = cpus[0], cpus[1]
        os.sched_setaffinity(0, {client_cpu})  # this script and its client processes
        print(f"servers on CPU {server_cpu}, the load generator on CPU {client_cpu}")
    else:
        print("one CPU only: server and load generator share it", file=sys.stderr)
    print(
        f"{args.connections} connections, {args.size}-byte text messages, {args.clients} client "
        f"process(es), {'uvloop' if importlib.util.find_spec('uvloop') else 'asyncio'}\n"
    )
    port_of = {name: free_port() for name in NEEDS}
    commands = servers(port_of)
    logs = Path(tempfile.mkdtemp(prefix="ws_bench-"))
    running: dict[str, Server] = {}
    results: dict[str, list[Run]] = {name: [] for name in names}
    try:
        for name in names:
            running[name] = Server(name, commands[name], port_of[name], server_cpu, logs)
        for server in running.values():
            server.wait_ready()
            measure(server, args, 1.0, cpus)  # warm up
        for round_no, order in alternated(args.rounds, names):
            for name in order:
                run = measure(running[name], args, args.duration, cpus)
                results[name].append(run)
                print(
                    f"round {round_no + 1}: {name:25} {run.rate:7.0f} msgs/s   server CPU "
                    f"{run.server_cpu:4.0%}, client CPU {run.client_cpu:4.0%}, others "
                    f"{run.others:4.0%}",
                    flush=True,
                )
    finally:
        for server in running.values():
            server.stop()
    print()
    medians = {name: statistics.median(r.rate for r in runs) for name, runs in results.items()}
    bases = [b for b in ("uvicorn-wsproto", "uvicorn-websockets", "prefork-base") if b in medians]
    print(
        f"{'server':25} {'median msgs/s':>13}  {'rounds':23} {'msgs/CPU-s':>10} {'srv CPU':>7} "
        f"{'cli CPU':>7} {'others':>6}" + "".join(f"  {'/ ' + b:>20}" for b in bases)
    )
    for name, runs in results.items():
        rounds = ", ".join(f"{r.rate:.0f}" for r in runs)
        per_cpu = statistics.median(r.rate / r.server_cpu for r in runs)
        srv = statistics.median(r.server_cpu for r in runs)
        others = statistics.median(r.others for r in runs)
        cli = statistics.median(r.client_cpu for r in runs)
        print(
            f"{name:25} {medians[name]:13.0f}  {rounds:23} {per_cpu:10.0f} {srv:7.0%} "
            f"{cli:7.0%} {others:6.0%}"
            + "".join(f"  {medians[name] / medians[b]:19.2f}x" for b in bases)
        )
    for server in running.values():
        text = server.text().strip()
        if text:
            print(f"\n{server.name} wrote ({server.log}):\n{text[-3000:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

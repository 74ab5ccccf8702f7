"""Published benchmarks: prefork against uvicorn, gunicorn, granian and hypercorn, throughput
and lifecycle, alternated in one run, written as Markdown and a chart.

    python benchmarks/publish.py [--driver wrk|prefork-load] [--quick] [--rounds 3]
                                 [--duration 5] [--only NAME...] [--rows ROW...] [--out DIR]

The servers (benchmarks/_peers.py starts them, as http_speed.py does; a peer that is not
installed is skipped and named, ``pip install -e '.[bench]'``): prefork (``prefork serve``,
its defaults: ``--http auto``), uvicorn-h11, uvicorn-httptools, gunicorn-uvicorn
(gunicorn -k UvicornWorker), gunicorn-asgi (gunicorn -k asgi), granian, hypercorn. Each serves
examples/bench_apps.py on 127.0.0.1 at log level warning, without an access log.

Throughput rows (``--rows`` names in brackets; a workload's name selects both worker counts),
each with 1 and with 2 workers:

    [hello]  GET / keep-alive, 64 connections        [close]  the same with Connection: close
    [json]   GET /json, 1 KiB of JSON                [echo]   POST /echo, a 64 KiB body echoed
    [sleep]  GET /sleep (the app awaits 20 ms), 256 connections

Requests/s and p99 latency per server, medians over ``--rounds`` rounds; in each round the
servers take turns, the order reversed every other round, so that machine noise hits them
alike. With 1 worker the server (all its processes) is pinned to one CPU and the load
generator to another (``taskset -c``); with 2 workers both share the same two CPUs. Before
measuring, every worker must have run the app's lifespan startup (polled) and each row's
request must be answered 200 with the expected body. "others" is the share of the two CPUs
that other processes and interrupts took during a run (noise: far from 0 means disturbed).

Lifecycle rows, 2 workers each, on a server started fresh for each server and round, serving
a copy of the app that the broken-reload row can spoil (what each server offers, and the
options used, are in RELOADS below and in the results):

    [reload]   requests lost (socket errors and non-2xx) over 3 reloads under keep-alive load
               (64 connections), each reload sent once the previous one has finished (every
               old worker gone, every new one through lifespan startup); and how long one
               reload takes without load
    [broken]   the app's module made to raise at import, then a reload: a new connection per
               request every 10 ms for the window that follows; does it keep serving?
    [kill]     kill -9 of a worker -> a connection answered by its replacement
    [startup]  spawn -> the first 200 (and -> every worker through lifespan startup)
    [memory]   PSS (/proc/PID/smaps_rollup) of the 2 idle workers (the processes that ran the
               app's lifespan startup: master excluded), and of all the server's processes
    [spread]   16 keep-alive connections opened at once: how many each worker holds (read
               from /proc: the accepted socket's inode in the worker's fd table)

``--rows throughput`` or ``--rows lifecycle`` selects a group. Load comes from wrk (``-t1``,
``--latency``) or, with ``--driver prefork-load``, from ``python -m prefork load ... --json``
(``-w 1`` unless ``--load-workers``). A full run writes benchmarks/results/DATE.md, DATE.png,
latest.md and latest.png; a run with --quick, --only or --rows writes them to a scratch
directory instead unless --out says where. The prefork measured (servers and ``prefork load``)
is a snapshot of HEAD's prefork/ taken when the run starts (others commit while a run lasts),
or the checkout as it is with --worktree.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.util
import io
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _peers import ROOT, Server, command, idle_seconds, missing, request, table, version
from _proc import alive, memory_kib

SERVERS = [
    "prefork",
    "uvicorn-h11",
    "uvicorn-httptools",
    "gunicorn-uvicorn",
    "gunicorn-asgi",
    "granian",
    "hypercorn",
]
#: Options the lifecycle rows add: what the server offers to survive a dead worker.
LIFECYCLE_OPTIONS = {"granian": ["--respawn-failed-workers"]}
#: What each server offers to reload its code and replace a dead worker (read from its source
#: at the version in the results, and checked by the lifecycle rows).
RELOADS = {
    "prefork": "`kill -HUP <master>`: a rolling reload, one worker at a time, each old worker "
    "stopped once its replacement has run the lifespan startup; a replacement that fails to "
    "import or start rolls the reload back and the old workers keep serving. A dead worker is "
    "replaced at once.",
    "uvicorn": "`kill -HUP` to the `--workers N` supervisor (uvicorn >= 0.30): a rolling "
    "restart, each new process health-checked (through a pipe) before the old one gets SIGTERM; "
    "a new process that never becomes ready (fails to import) is killed and the restart "
    "aborted, the old workers keep serving. A dead worker is noticed on the supervisor's 0.5 s "
    "tick and replaced. With `--workers 1` there is no supervisor: no reload, no replacement. "
    "(`--reload` watches files, for development.)",
    "gunicorn": "`kill -HUP <master>`: spawns N new workers and at once sends SIGTERM to the N "
    "old ones (they finish their requests), without waiting for the new ones to be ready; a new "
    "worker that fails to boot (exit code 3) halts the master, so a broken deploy takes the "
    "service down. A dead worker is replaced (SIGCHLD).",
    "granian": "`kill -HUP`: for each worker in turn, spawns a replacement, sleeps "
    "`--respawn-interval` (3.5 s; no readiness check), then stops the old one. A worker that "
    "exits unexpectedly stops the whole server unless `--respawn-failed-workers` (used here), "
    "which respawns it but exits on a crash loop (a worker dying within 5.5 s of a respawn, "
    "as after a reload onto broken code). (`--reload` watches files, for development.)",
    "hypercorn": "`kill -HUP`: stops every worker and waits for them, then starts N new ones: "
    "not rolling, but the master keeps the listening socket, so connections wait in the "
    "backlog. A worker that exits with a non-zero code (killed, or failing to import) ends the "
    "whole server: no replacement. (`--reload` watches files, for development.)",
}
ECHO_BODY = b"0123456789abcdef" * 4096  # 64 KiB
ECHO_SCRIPT = f"""\
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", {len(ECHO_BODY) // 16})
wrk.headers["Content-Type"] = "application/octet-stream"
"""
LIFECYCLE_ROWS = ["reload", "broken", "kill", "startup", "memory", "spread"]
LIFECYCLE_WORKERS = 2
RELOADS_UNDER_LOAD = 3
SPREAD_CONNECTIONS = 16
BROKEN = '\nraise RuntimeError("benchmarks/publish.py: a broken deploy")\n'
ERRORS = ["connect", "read", "write", "timeout", "status"]


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    short: str  # on the chart
    path: str
    size: int  # of the response body
    method: str = "GET"
    close: bool = False  # Connection: close on every request
    connections: int = 64


WORKLOADS = [
    Workload("hello", "hello", "hello", "/", 13),
    Workload("close", "hello, Connection: close", "Connection:\nclose", "/", 13, close=True),
    Workload("json", "JSON 1 KiB", "JSON 1 KiB", "/json", 1024),
    Workload("echo", "POST echo 64 KiB", "POST echo\n64 KiB", "/echo", len(ECHO_BODY), "POST"),
    Workload(
        "sleep", "20 ms await, 256 conns", "20 ms await\n256 conns", "/sleep", 13, connections=256
    ),
]


@dataclass(frozen=True)
class Row:
    """A throughput row: a workload with a number of workers."""

    workload: Workload
    workers: int

    @property
    def key(self) -> str:
        return f"{self.workload.name}-w{self.workers}"

    @property
    def title(self) -> str:
        return f"{self.workload.title}, {self.workers} worker{'s' if self.workers > 1 else ''}"


# -- load drivers ---------------------------------------------------------------------------


@dataclass
class Load:
    """What a load generator reports, whichever it is."""

    requests: int
    seconds: float
    rps: float
    bytes: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def ms(text: str) -> float:
    """wrk's '1.23ms', '456.00us', '2.01s', '1.00m' in milliseconds."""
    match = re.fullmatch(r"([\d.]+)([a-z]+)", text)
    if match is None or match.group(2) not in MS:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * MS[match.group(2)]


class Wrk:
    name = "wrk"

    def __init__(self, workdir: Path) -> None:
        self.script = workdir / "echo.lua"
        self.script.write_text(ECHO_SCRIPT)

    def available(self) -> str | None:
        return None if shutil.which("wrk") else "wrk not found (apt-get install wrk)"

    def version(self) -> str:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        return (done.stdout + done.stderr).splitlines()[0].split(" Copyright")[0]

    def describe(self) -> str:
        return "wrk -t1 --latency"

    def command(
        self, url: str, w: Workload, connections: int, seconds: float, timeout: float | None
    ) -> list[str]:
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
        if timeout is not None:
            cmd.append(f"--timeout={timeout:g}s")
        if w.close:
            cmd += ["-H", "Connection: close"]
        if w.method == "POST":
            cmd += ["-s", str(self.script)]
        return [*cmd, url]

    def parse(self, out: str) -> Load:
        total = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+)([KMGT]?B) read", out)
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        latency = re.search(r"Latency\s+([\d.]+\w+)\s+([\d.]+\w+)\s+([\d.]+\w+)", out)
        spread = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", out, re.MULTILINE))
        if total is None or rate is None or latency is None or not {"50", "99"} <= set(spread):
            raise RuntimeError(f"could not read wrk's output:\n{out}")
        errors = dict.fromkeys(ERRORS, 0)
        sock = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
        )
        if sock:
            for key, value in zip(ERRORS, sock.groups(), strict=False):
                errors[key] = int(value)
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if non_2xx:
            errors["status"] = int(non_2xx.group(1))
        return Load(
            requests=int(total.group(1)),
            seconds=ms(total.group(2)) / 1000,
            rps=float(rate.group(1)),
            bytes=round(float(total.group(3)) * UNITS[total.group(4)]),
            p50_ms=ms(spread["50"]),
            p99_ms=ms(spread["99"]),
            max_ms=ms(latency.group(3)),
            errors=errors,
        )


class PreforkLoad:
    """``python -m prefork load URL -c N -d Ss -w W --json``: the last line of its stdout is one
    JSON object (requests, duration_s, rps, bytes, latency_ms, errors, status)."""

    name = "prefork-load"

    def __init__(self, workdir: Path, workers: int) -> None:
        self.body = workdir / "echo.bin"
        self.body.write_bytes(ECHO_BODY)
        self.workers = workers

    def available(self) -> str | None:
        done = subprocess.run(
            [sys.executable, "-m", "prefork", "load", "--help"], capture_output=True, text=True
        )
        if done.returncode:
            return f"`python -m prefork load --help` failed: {done.stderr.strip()[:200]}"
        return None

    def version(self) -> str:
        return f"prefork load {version('prefork')} (the prefork measured)"

    def describe(self) -> str:
        return f"prefork load -w {self.workers}"

    def command(
        self, url: str, w: Workload, connections: int, seconds: float, timeout: float | None
    ) -> list[str]:
        cmd = [
            sys.executable, "-m", "prefork", "load", url, "-c", str(connections),
            "-d", f"{seconds:g}s", "-w", str(self.workers), "--json",
        ]  # fmt: skip
        if w.close:
            cmd += ["-H", "Connection: close"]
        if w.method == "POST":
            cmd += ["-m", "POST", "--data-file", str(self.body)]
            cmd += ["-H", "Content-Type: application/octet-stream"]
        return cmd

    def parse(self, out: str) -> Load:
        lines = [line for line in out.splitlines() if line.strip()]
        try:
            got = json.loads(lines[-1])
            latency = got["latency_ms"]
            return Load(
                requests=int(got["requests"]),
                seconds=float(got["duration_s"]),
                rps=float(got["rps"]),
                bytes=int(got["bytes"]),
                p50_ms=float(latency["p50"]),
                p99_ms=float(latency["p99"]),
                max_ms=float(latency["max"]),
                errors={key: int(got["errors"].get(key, 0)) for key in ERRORS},
            )
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise RuntimeError(f"could not read prefork load's JSON ({exc!r}):\n{out}") from exc


Driver = Wrk | PreforkLoad


def drive(
    driver: Driver, server: Server, w: Workload, seconds: float, cpus: str | None,
    timeout: float | None = None, connections: int | None = None,
) -> subprocess.Popen[str]:  # fmt: skip
    """Start the load generator (on ``cpus`` when given)."""
    url = f"http://127.0.0.1:{server.port}{w.path}"
    cmd = driver.command(url, w, connections or w.connections, seconds, timeout)
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(driver: Driver, run: subprocess.Popen[str], seconds: float) -> Load:
    try:
        out, err = run.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        run.kill()
        run.communicate()
        raise RuntimeError(f"{driver.name} did not finish within {seconds + 60:.0f} s") from None
    if run.returncode:
        raise RuntimeError(f"{driver.name} exited with {run.returncode}: {err.strip() or out}")
    return driver.parse(out)


# -- throughput -----------------------------------------------------------------------------


@dataclass
class Run:
    load: Load
    server_cpu: float  # share of one CPU, all the server's processes together
    driver_cpu: float  # share of one CPU
    others: float  # share of the benchmark's CPUs that other processes and interrupts used


def check(server: Server, w: Workload) -> None:
    """The row's request must be answered 200 with the expected body."""
    body = ECHO_BODY if w.method == "POST" else b""
    status, got = request(server.port, w.method, w.path, body, w.close)
    if status != 200 or len(got) != w.size:
        raise RuntimeError(
            f"{w.method} {w.path} answered {status} with {len(got)} bytes, "
            f"not 200 with {w.size}: {got[:80]!r}"
        )
    if body and got != body:
        raise RuntimeError(f"POST {w.path} echoed other bytes than it was sent")
    if w.path == "/json":
        json.loads(got)


def measure(
    driver: Driver, server: Server, w: Workload, seconds: float, cpus: str | None,
    watched: list[int],
) -> Run:  # fmt: skip
    """One load run, with the CPU each side used and what else ran on ``watched``."""
    server_cpu = server.cpu_seconds()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    idle = idle_seconds(watched)
    began = time.perf_counter()
    load = finish(driver, drive(driver, server, w, seconds, cpus), seconds)
    elapsed = time.perf_counter() - began
    idle = idle_seconds(watched) - idle
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = server.cpu_seconds() - server_cpu
    driver_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if load.requests == 0:
        raise RuntimeError(f"{driver.name} got no answer")
    per_response = load.bytes / load.requests
    if per_response < 0.98 * w.size:  # wrk rounds what it read to 3 digits or so
        raise RuntimeError(
            f"{driver.name} read {per_response:.0f} bytes per response, fewer than the body's "
            f"{w.size}"
        )
    if load.failed:
        detail = ", ".join(f"{k} {v}" for k, v in load.errors.items() if v)
        print(f"    {server.label}, {w.name}: {driver.name} reported errors: {detail}", flush=True)
    return Run(
        load=load,
        server_cpu=server_cpu / elapsed,
        driver_cpu=driver_cpu / elapsed,
        others=1 - (idle + server_cpu + driver_cpu) / (elapsed * len(watched)),
    )


def throughput(
    args: argparse.Namespace, driver: Driver, names: list[str], rows: list[Row],
    workdir: Path, failed: dict[tuple[str, str], str],
) -> dict[tuple[str, str], list[Run]]:  # fmt: skip
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) >= 2 and shutil.which("taskset") is None:
        print("taskset not found (util-linux): nothing pinned", file=sys.stderr)
        cpus = cpus[:1]

    def cpu(workers: int, which: int) -> str | None:
        """What ``taskset -c`` gets: one worker, a CPU each; more, both CPUs for all."""
        if len(cpus) < 2:
            return None
        return str(cpus[which]) if workers == 1 else f"{cpus[0]},{cpus[1]}"

    watched = sorted(os.sched_getaffinity(0))[:2]
    results: dict[tuple[str, str], list[Run]] = {}
    servers: dict[tuple[str, int], Server] = {}

    def fail(name: str, row: Row, why: str) -> None:
        failed[name, row.key] = why
        print(f"    {name}, {row.key}: FAILED: {why}", file=sys.stderr, flush=True)

    try:
        for workers in sorted({r.workers for r in rows}):
            for name in names:
                servers[name, workers] = Server(name, workers, cpu(workers, 0), workdir)
        for (name, workers), server in servers.items():
            try:
                server.wait_ready()
            except RuntimeError as exc:
                for r in rows:
                    if r.workers == workers:
                        fail(name, r, f"{server.label} {exc}")
        for r in rows:
            for name in names:
                if (name, r.key) in failed:
                    continue
                server = servers[name, r.workers]
                try:
                    check(server, r.workload)
                    measure(driver, server, r.workload, 1, cpu(r.workers, 1), watched)
                except (RuntimeError, OSError, http.client.HTTPException, ValueError) as exc:
                    fail(name, r, str(exc))
        for round_no in range(args.rounds):
            order = names if round_no % 2 == 0 else names[::-1]
            for r in rows:
                for name in order:
                    if (name, r.key) in failed:
                        continue
                    server = servers[name, r.workers]
                    try:
                        run = measure(
                            driver, server, r.workload, args.duration, cpu(r.workers, 1), watched
                        )
                    except RuntimeError as exc:
                        fail(name, r, f"round {round_no + 1}: {exc}")
                        continue
                    results.setdefault((name, r.key), []).append(run)
                    print(
                        f"round {round_no + 1}: {r.key:9} {server.label:24} "
                        f"{run.load.rps:9.0f} req/s  p99 {run.load.p99_ms:7.2f} ms  server CPU "
                        f"{run.server_cpu:4.0%}, {driver.name} CPU {run.driver_cpu:4.0%}, "
                        f"others {run.others:4.0%}",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    return results


# -- lifecycle: probing what answers --------------------------------------------------------

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def read_response(sock: socket.socket) -> int:
    """Read one response with a Content-Length body; its status."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        rest += chunk
    return int(head.split(b" ", 2)[1])


@contextlib.contextmanager
def connections_at_once(port: int, n: int) -> Iterator[tuple[list[socket.socket], float]]:
    """``n`` connections opened together, a GET answered 200 on each, kept open; and when the
    last answer came (time.monotonic)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        with selectors.DefaultSelector() as sel:
            for s in socks:
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                sel.register(s, selectors.EVENT_WRITE)
            pending = len(socks)
            deadline = time.monotonic() + 10
            while pending:
                events = sel.select(max(0.0, deadline - time.monotonic()))
                if not events:
                    raise TimeoutError("connections not established within 10 s")
                for key, _ in events:
                    sel.unregister(key.fileobj)
                    pending -= 1
        for s in socks:
            error = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise ConnectionError(os.strerror(error))
            s.settimeout(10)
            s.sendall(REQUEST)
        for s in socks:
            if (status := read_response(s)) != 200:
                raise ConnectionError(f"answered {status}")
        yield socks, time.monotonic()
    finally:
        for s in socks:
            s.close()


TCP_ESTABLISHED, TCP_CLOSE_WAIT = 1, 8


def server_sockets(port: int, states: int) -> dict[int, int]:
    """{client port: inode} of the server's side of the TCP connections on 127.0.0.1:``port``
    in ``states`` (a mask of 1 << TCP state), from the kernel's sock_diag over netlink (what
    ``ss`` reads): the kernel filters by state, so the TIME_WAIT sockets of a load run cost
    nothing, where reading /proc/net/tcp took 100 ms once it held 20,000 of them."""
    nlmsg_done, nlmsg_error, sock_diag_by_family = 3, 2, 20
    request = struct.pack(
        "=IHHII" "BBBxI" "48s",  # nlmsghdr, inet_diag_req_v2 (the sockid left zero)
        16 + 56, sock_diag_by_family, 0x1 | 0x300, 1, 0,  # NLM_F_REQUEST | NLM_F_DUMP
        socket.AF_INET, socket.IPPROTO_TCP, 0, states, b"",
    )  # fmt: skip
    found: dict[int, int] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4) as nl:  # NETLINK_SOCK_DIAG
        nl.sendall(request)
        while True:
            data = nl.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == nlmsg_done:
                    return found
                if kind == nlmsg_error:
                    raise OSError(f"sock_diag answered an error: {data[offset : offset + 20]!r}")
                # inet_diag_msg: family, state, timer, retrans, then the sockid (ports big-endian)
                local, remote = struct.unpack_from("!HH", data, offset + 16 + 4)
                if local == port:
                    found[remote] = struct.unpack_from("=I", data, offset + 16 + 68)[0]
                offset += (length + 3) & ~3


def owners(port: int, socks: list[socket.socket], pids: set[int]) -> list[int | None]:
    """The process (among ``pids``) holding the server side of each connection: the accepted
    socket's inode (sock_diag), found in the process's fd table."""
    ours = [s.getsockname()[1] for s in socks]
    wanted = set(ours)
    inode_of = {
        f"socket:[{inode}]": remote
        for remote, inode in server_sockets(port, 1 << TCP_ESTABLISHED).items()
        if remote in wanted
    }
    holder: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link in inode_of:
                        holder[inode_of[link]] = pid
    return [holder.get(p) for p in ours]


def wait_closed(port: int, timeout: float = 10.0) -> None:
    """Poll until the server holds no established or half-closed connection on ``port``."""
    deadline = time.monotonic() + timeout
    while server_sockets(port, 1 << TCP_ESTABLISHED | 1 << TCP_CLOSE_WAIT):
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def first_answer(server: Server, timeout: float = 60.0) -> None:
    """Poll until GET / answers 200 (a refused connection is retried after 5 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"exited with {server.proc.returncode}: {server.tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if request(server.port, "GET", "/")[0] == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no 200 within {timeout:g} s: {server.tail()}")
        time.sleep(0.005)


def all_replaced(server: Server, old: set[int]) -> Callable[[], bool]:
    """A predicate: every old worker gone, and ``workers`` new ones through lifespan startup."""

    def done() -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {server.proc.returncode}")
        new = server.worker_pids()
        return len(new) >= server.workers and not new & old and not any(map(alive, old))

    return done


class Prober(threading.Thread):
    """GET / on a new connection every 10 ms (2 s timeout): (time sent, answered 200)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stopped = threading.Event()
        self.samples: list[tuple[float, bool]] = []

    def run(self) -> None:
        while not self.stopped.is_set():
            began = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                ok = conn.getresponse().status == 200
            except (OSError, http.client.HTTPException):
                ok = False
            finally:
                conn.close()
            self.samples.append((began, ok))
            self.stopped.wait(max(0.0, began + 0.01 - time.monotonic()))


# -- lifecycle: the rows ---------------------------------------------------------------------


@dataclass
class Life:
    """One server's lifecycle results in one round (None: not measured)."""

    startup_s: float | None = None
    all_ready_s: float | None = None
    pss_workers_kib: int | None = None
    pss_all_kib: int | None = None
    processes: int | None = None
    splits: list[tuple[int, ...]] = field(default_factory=list)
    kill_s: float | None = None
    kill_note: str | None = None  # why there was no replacement
    reload_s: float | None = None
    reload_load: Load | None = None
    reloads_done: int = 0
    reload_note: str | None = None
    broken: str | None = None
    broken_kept: bool | None = None
    failures: list[str] = field(default_factory=list)


def lifecycle_round(
    args: argparse.Namespace, driver: Driver, name: str, round_no: int, workdir: Path,
    selected: set[str],
) -> Life:  # fmt: skip
    life = Life()
    appdir = workdir / f"app-{name}-{round_no}"
    appdir.mkdir()
    module = appdir / "bench_apps.py"
    shutil.copy(ROOT / "examples" / "bench_apps.py", module)
    starts = 0
    server: Server | None = None

    def start() -> tuple[Server, float]:
        nonlocal starts
        starts += 1
        began = time.monotonic()
        s = Server(
            name, LIFECYCLE_WORKERS, None, workdir, app="bench_apps:app",
            extra=LIFECYCLE_OPTIONS.get(name, []), pythonpath=[str(appdir)],
            tag=f"-life{round_no}-{starts}",
        )  # fmt: skip
        return s, began

    def up() -> Server:
        """The server, started afresh when it died or lost a worker."""
        nonlocal server
        if server is not None:
            if server.proc.poll() is None and len(server.worker_pids()) == LIFECYCLE_WORKERS:
                return server
            server.stop()
        server, _ = start()
        server.wait_ready()
        return server

    def step(row: str, body: Callable[[], None]) -> None:
        if row not in selected:
            return
        try:
            body()
        except (RuntimeError, OSError, http.client.HTTPException, ValueError) as exc:
            life.failures.append(f"{row}: {exc}")
            print(f"    {name}, {row}: FAILED: {exc}", file=sys.stderr, flush=True)

    def startup() -> None:
        nonlocal server
        server, began = start()
        first_answer(server)
        life.startup_s = time.monotonic() - began
        wait_for(lambda: len(server.worker_pids()) >= LIFECYCLE_WORKERS, 60, "every worker")
        life.all_ready_s = time.monotonic() - began

    def memory() -> None:
        s = up()
        for _ in range(100):
            request(s.port, "GET", "/")
        wait_idle(s)
        workers = s.worker_pids()
        everything = s.pids()
        life.pss_workers_kib = sum(memory_kib(p)[1] for p in workers)
        life.pss_all_kib = sum(memory_kib(p)[1] for p in everything)
        life.processes = len(everything)

    def spread() -> None:
        s = up()
        for _ in range(args.spread_trials):
            workers = s.worker_pids()
            with connections_at_once(s.port, SPREAD_CONNECTIONS) as (socks, _):
                held = owners(s.port, socks, s.pids())
            counts = sorted((held.count(p) for p in workers), reverse=True)
            if sum(counts) != SPREAD_CONNECTIONS:
                raise RuntimeError(f"found {sum(counts)} of {SPREAD_CONNECTIONS} in the workers")
            life.splits.append(tuple(counts))
            wait_closed(s.port)

    def kill() -> None:
        s = up()
        old = s.worker_pids()
        victim = min(old)
        began = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        while True:
            now = time.monotonic()
            if s.proc.poll() is not None:
                life.kill_note = f"not replaced: the server exited ({s.proc.returncode})"
                return
            if now - began > args.kill_timeout:
                life.kill_note = f"not replaced within {args.kill_timeout:g} s"
                return
            new = s.worker_pids() - old
            if new:
                with connections_at_once(s.port, 4) as (socks, answered):
                    if set(owners(s.port, socks, s.pids())) & new:
                        life.kill_s = answered - began
                        return
            else:
                time.sleep(0.002)

    def reload_time() -> None:
        s = up()
        old = s.worker_pids()
        began = time.monotonic()
        os.kill(s.proc.pid, signal.SIGHUP)
        wait_for(all_replaced(s, old), 60, "a reload to finish")
        life.reload_s = time.monotonic() - began

    def reload() -> None:
        s = up()
        gap = args.gap
        # long enough for three reloads that take up to twice as long under load
        took = max(life.reload_s or 2.0, 0.2)
        seconds = round(gap + RELOADS_UNDER_LOAD * (2 * took + 1 + gap) + 1)
        run = drive(driver, s, WORKLOADS[0], seconds, None, timeout=30)
        began = time.monotonic()
        try:
            time.sleep(gap)  # load before the first reload
            for _ in range(RELOADS_UNDER_LOAD):
                old = s.worker_pids()
                os.kill(s.proc.pid, signal.SIGHUP)
                wait_for(all_replaced(s, old), 60, "a reload under load to finish", 0.01)
                life.reloads_done += 1
                if time.monotonic() - began > seconds:
                    life.reload_note = f"reload {life.reloads_done} ended after the load"
                time.sleep(gap)  # load between reloads
        except RuntimeError as exc:
            life.reload_note = str(exc)
        life.reload_load = finish(driver, run, seconds)

    def broken() -> None:
        s = up()
        prober = Prober(s.port)
        prober.start()
        try:
            wait_for(lambda: sum(ok for _, ok in prober.samples) >= 20, 30, "20 answers", 0.01)
            module.write_text(module.read_text() + BROKEN)
            window = min(30.0, max(6.0, 2 * (life.reload_s or 2.0) + 3))
            sent = time.monotonic()
            os.kill(s.proc.pid, signal.SIGHUP)
            # an observation window, not a wait for readiness
            time.sleep(window)
        finally:
            prober.stopped.set()
            prober.join(5)
        after = [(t - sent, ok) for t, ok in prober.samples if t >= sent]
        failures = [t for t, ok in after if not ok]
        tail = [ok for t, ok in after if t >= window - 1]
        exited = s.proc.poll()
        if not failures:
            life.broken = f"keeps serving (0 of {len(after)} failed)"
            life.broken_kept = True
        else:
            life.broken_kept = False
            if tail and all(tail):
                life.broken = (
                    f"{len(failures)} of {len(after)} failed from {failures[0]:.1f} s, then "
                    "serving again"
                )
            else:
                life.broken = f"stops serving {failures[0]:.1f} s after HUP"
        if exited is not None:
            life.broken += f"; exited ({exited})"
        life.broken += f" [{window:.0f} s window]"
        s.stop()
        module.write_text((ROOT / "examples" / "bench_apps.py").read_text())

    try:
        step("startup", startup)
        step("memory", memory)
        step("spread", spread)
        step("kill", kill)
        step("reload" if "reload" in selected else "broken", reload_time)
        step("reload", reload)
        step("broken", broken)
    finally:
        if server is not None:
            server.stop()
    return life


def wait_idle(server: Server, timeout: float = 5.0) -> None:
    """Poll until the server's processes use under 1% of a CPU over 200 ms (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    used = server.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = server.cpu_seconds()
        if now - used < 0.002:
            return
        used = now


def lifecycle(
    args: argparse.Namespace, driver: Driver, names: list[str], selected: set[str], workdir: Path
) -> dict[str, list[Life]]:
    results: dict[str, list[Life]] = {}
    for round_no in range(args.rounds):
        order = names if round_no % 2 == 0 else names[::-1]
        for name in order:
            began = time.monotonic()
            life = lifecycle_round(args, driver, name, round_no, workdir, selected)
            results.setdefault(name, []).append(life)
            print(f"round {round_no + 1}: lifecycle {name:18} {summary(life)}", flush=True)
            print(f"    ({time.monotonic() - began:.0f} s)", flush=True)
    return results


def summary(life: Life) -> str:
    parts = []
    if life.startup_s is not None:
        parts.append(f"startup {life.startup_s:.2f} s")
    if life.pss_workers_kib is not None:
        parts.append(f"PSS {life.pss_workers_kib / 1024:.1f} MiB")
    if life.splits:
        parts.append("spread " + " ".join("/".join(map(str, s)) for s in life.splits))
    if life.kill_s is not None:
        parts.append(f"kill -9 -> replaced in {life.kill_s * 1000:.0f} ms")
    elif life.kill_note:
        parts.append(f"kill -9: {life.kill_note}")
    if life.reload_s is not None:
        parts.append(f"reload {life.reload_s:.2f} s")
    if life.reload_load is not None:
        parts.append(f"lost {life.reload_load.failed} of {life.reload_load.requests}")
    if life.broken:
        parts.append(f"broken: {life.broken}")
    return "; ".join(parts)


# -- the report -----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = "?"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = f"{int(line.split()[1]) / (1 << 20):.0f} GiB"
    return {
        "cpu": model,
        "cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable by this run)",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "memory": mem,
    }


def git(*argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def prefork_tree(workdir: Path, worktree: bool) -> str:
    """Which prefork the servers (and ``prefork load``) run, said in words. Unless
    ``worktree``, a snapshot of HEAD's prefork/ put first on PYTHONPATH: others commit in this
    checkout while a run lasts, and a run must measure one version."""
    commit = git("rev-parse", "--short", "HEAD")
    if worktree:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "prefork")
        return f"{commit}{' + uncommitted changes' if dirty else ''}, the working tree"
    tree = workdir / "tree"
    archive = subprocess.run(
        ["git", "archive", "HEAD", "prefork"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(tree), *path])
    where = subprocess.run(
        [sys.executable, "-c", "import prefork; print(prefork.__file__)"],
        cwd=workdir, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not where.startswith(str(tree)):
        raise SystemExit(f"prefork is imported from {where}, not from the snapshot in {tree}")
    return f"{commit}, a snapshot of HEAD"


def versions(names: list[str], tree: str) -> dict[str, str]:
    dists = {
        "prefork": f"prefork {version('prefork')} ({tree})",
        "uvicorn": f"uvicorn {version('uvicorn')}",
        "gunicorn": f"gunicorn {version('gunicorn')}",
        "granian": f"granian {version('granian')}",
        "hypercorn": f"hypercorn {version('hypercorn')}",
    }
    extra = {
        "uvicorn-h11": f"h11 {version('h11')}, uvloop {version('uvloop')}",
        "uvicorn-httptools": f"httptools {version('httptools')}, uvloop {version('uvloop')}",
        "gunicorn-uvicorn": f"uvicorn {version('uvicorn')}, httptools {version('httptools')}",
        "gunicorn-asgi": f"gunicorn_h1c {version('gunicorn_h1c')}"
        if importlib.util.find_spec("gunicorn_h1c")
        else "its Python parser",
        "prefork": f"h11 {version('h11')}, uvloop {version('uvloop')}",
        "hypercorn": f"h11 {version('h11')}, uvloop {version('uvloop')}",
        "granian": "its Rust HTTP/1 (hyper)",
    }
    return {n: f"{dists[n.split('-')[0]]}; {extra[n]}" for n in names}


def shown_command(name: str, workers: int, lifecycle_: bool = False) -> str:
    extra = LIFECYCLE_OPTIONS.get(name, []) if lifecycle_ else []
    argv = command(name, 8000, workers, "examples.bench_apps:app", extra)
    argv[0] = "python"
    return " ".join(argv)


def median(values: list[float]) -> float:
    return statistics.median(values)


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def lifecycle_cells(lives: list[Life]) -> dict[str, str]:
    """The lifecycle table's cells for one server, over its rounds."""

    def some(get: Callable[[Life], float | None]) -> list[float]:
        return [v for v in map(get, lives) if v is not None]

    cells: dict[str, str] = {}
    lost = [life.reload_load for life in lives if life.reload_load is not None]
    if lost:
        per_round = ", ".join(str(load.failed) for load in lost)
        requests = median([load.requests for load in lost])
        slowest = max(load.max_ms for load in lost)
        cells["reload"] = f"{per_round} of ~{requests:,.0f} (max latency {slowest / 1000:.2f} s)"
        notes = [life.reload_note for life in lives if life.reload_note]
        if notes:
            cells["reload"] += " *"
    if took := some(lambda life: life.reload_s):
        cells["reload-time"] = f"{median(took):.2f} s"
    verdicts = [life.broken for life in lives if life.broken]
    if verdicts:
        kept = {life.broken_kept for life in lives if life.broken}
        cells["broken"] = verdicts[0]
        if len(kept) > 1:
            cells["broken"] += " (rounds differ: see details)"
    kills = some(lambda life: life.kill_s)
    notes = [life.kill_note for life in lives if life.kill_note]
    if kills:
        cells["kill"] = f"{median(kills) * 1000:.0f} ms"
        if notes:
            cells["kill"] += f" ({len(notes)} of {len(lives)}: {notes[0]})"
    elif notes:
        cells["kill"] = notes[0]
    if first := some(lambda life: life.startup_s):
        every = some(lambda life: life.all_ready_s)
        cells["startup"] = f"{median(first):.2f} s"
        if every:
            cells["startup"] += f" ({median(every):.2f} s)"
    if pss := some(lambda life: life.pss_workers_kib):
        cells["memory"] = mib(median(pss))
        total = some(lambda life: life.pss_all_kib)
        procs = [life.processes for life in lives if life.processes]
        cells["memory-all"] = f"{mib(median(total))} ({max(procs)} processes)"
    splits = [s for life in lives for s in life.splits]
    if splits:
        ordered = sorted(splits, key=lambda s: s[0])
        mid = ordered[(len(ordered) - 1) // 2]
        cells["spread"] = f"{'/'.join(map(str, mid))} (worst {'/'.join(map(str, ordered[-1]))})"
    return cells


LIFECYCLE_TITLES = {
    "reload": f"requests lost over {RELOADS_UNDER_LOAD} reloads under load, per round",
    "reload-time": "one reload, no load (signal -> old workers gone, new ones started)",
    "broken": "reload onto code that fails to import",
    "kill": "kill -9 of a worker -> its replacement answers",
    "startup": "start-up: spawn -> first 200 (-> both workers started)",
    "memory": "PSS of the 2 idle workers (master excluded)",
    "memory-all": "PSS of all the server's processes (master included)",
    "spread": f"{SPREAD_CONNECTIONS} keep-alive connections opened at once, per worker: median "
    "(worst)",
}
LIFECYCLE_ROW_OF = {"reload-time": "reload", "memory-all": "memory"}


def render(
    args: argparse.Namespace, driver: Driver, driver_version: str, names: list[str],
    skipped: dict[str, str], rows: list[Row], results: dict[tuple[str, str], list[Run]],
    lives: dict[str, list[Life]], failed: dict[tuple[str, str], str], selected: set[str],
    took: float, chart: str | None, date: str, argv: list[str],
) -> str:  # fmt: skip
    box = machine()
    out: list[str] = [f"# prefork and its peers, {date}", ""]
    out.append(
        f"`{' '.join(['python', 'benchmarks/publish.py', *argv])}`, "
        f"{'a quick smoke run, ' if args.quick else ''}took {took / 60:.0f} min. "
        "Every server serves examples/bench_apps.py (a raw ASGI app with lifespan) on 127.0.0.1, "
        "at log level warning, without an access log; the servers take turns in every round "
        "(the order reversed every other round), so that machine noise hits them alike."
    )
    out += ["", "## Machine", ""]
    out += [f"- {key}: {value}" for key, value in box.items()]
    out.append(f"- load generator: {driver_version}")
    out.append(
        "- load average (1, 5, 15 min) at the start: "
        + ", ".join(f"{v:.2f}" for v in args.loadavg)
        + "; at the end: "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg())
        + " (a shared machine: other sessions' work is noise)"
    )
    out += ["", "## Servers", ""]
    described = versions(names, args.tree)
    for n in names:
        out.append(f"- **{n}**: {described[n]}; `{shown_command(n, 2)}`")
    if skipped:
        out += ["", "Skipped: " + "; ".join(f"{n} ({why})" for n, why in skipped.items()) + "."]

    if rows:
        cpus = sorted(os.sched_getaffinity(0))[:2]
        out += ["", "## Throughput", ""]
        out.append(
            f"{driver.describe()}, {args.duration:g} s per run, {args.rounds} round(s), medians; "
            f"64 connections ({WORKLOADS[-1].connections} for the 20 ms await). 1 worker: the "
            f"server (all its processes) on CPU {cpus[0]}, the load generator on CPU "
            f"{cpus[-1]}; 2 workers: both on CPUs {cpus[0]},{cpus[-1]}. A cell with * had "
            "errors (listed below)."
        )

        def cell(name: str, row: Row, show: Callable[[list[Run]], str]) -> str:
            got = results.get((name, row.key), [])
            if not got:
                return "failed" if (name, row.key) in failed else "-"
            mark = " *" if any(r.load.failed for r in got) else ""
            return show(got) + mark

        def rps(got: list[Run]) -> str:
            return f"{median([r.load.rps for r in got]):,.0f}"

        def p99(got: list[Run]) -> str:
            return f"{median([r.load.p99_ms for r in got]):.2f}"

        def cpu(got: list[Run]) -> str:
            return (
                f"{median([r.server_cpu for r in got]):.0%} / "
                f"{median([r.driver_cpu for r in got]):.0%} / {median([r.others for r in got]):.0%}"
            )

        for title, show in (("Requests/s", rps), ("p99 latency, ms", p99)):
            out += ["", f"### {title}", ""]
            body = [[r.title, *(cell(n, r, show) for n in names)] for r in rows]
            out.append(table(["", *names], body))
        if chart:
            out += ["", f"![requests/s and p99 latency per server]({chart})"]
        out += [
            "",
            "### CPU: server / load generator / others",
            "",
            "Medians. Server and load generator: the share of one CPU (the server's processes "
            "together); others: the share of both CPUs that other processes and interrupts took "
            "during the run (noise: far from 0% means the run was disturbed).",
            "",
        ]
        body = [[r.title, *(cell(n, r, cpu) for n in names)] for r in rows]
        out.append(table(["", *names], body))
        errored = [
            (n, r, run) for r in rows for n in names for run in results.get((n, r.key), [])
            if run.load.failed
        ]  # fmt: skip
        if errored:
            out += ["", "Errors reported by the load generator:", ""]
            for n, r, run in errored:
                detail = ", ".join(f"{k} {v}" for k, v in run.load.errors.items() if v)
                out.append(f"- {n}, {r.title}: {detail} (of {run.load.requests:,} requests)")

    if lives:
        out += ["", "## Lifecycle", ""]
        out.append(
            f"{LIFECYCLE_WORKERS} workers, nothing pinned, a server started afresh for each "
            f"server and round ({args.rounds} round(s); medians where one figure is shown). "
            "Reload: SIGHUP to the server's main process (what each offers is below); the load "
            f"is {driver.describe()} -c64 on GET / keep-alive, and a request is lost when the "
            "load generator counts a socket error or a non-2xx answer for it (it retries "
            "nothing); the next reload is sent once the previous one has finished (every old "
            "worker gone, every new one through lifespan startup). Broken code: the app's module "
            "made to raise at import, then SIGHUP, with a GET on a new connection every 10 ms "
            "(2 s timeout) through the window shown. kill -9: until a connection is answered "
            "by a process that did not exist before. PSS from /proc/PID/smaps_rollup after 100 "
            "requests and once idle; workers are the processes that ran the app's lifespan "
            "startup. Spread: which worker holds each accepted socket (its inode in "
            f"/proc/PID/fd), over {args.spread_trials} trial(s) per round. Options added for "
            "these rows: "
            + ("; ".join(f"{n}: `{' '.join(o)}`" for n, o in LIFECYCLE_OPTIONS.items()) or "none")
            + "."
        )
        cells = {n: lifecycle_cells(lives[n]) for n in names if n in lives}
        body = []
        for key, title in LIFECYCLE_TITLES.items():
            if LIFECYCLE_ROW_OF.get(key, key) not in selected:
                continue
            body.append([title, *(cells.get(n, {}).get(key, "n/a") for n in names)])
        out += ["", table(["", *names], body)]
        out += ["", "### What each server offers to reload and to replace a dead worker", ""]
        seen = []
        for n in names:
            family = n.split("-")[0]
            if family not in seen:
                seen.append(family)
                out.append(f"- **{family}**: {RELOADS[family]}")
        out += ["", "### Lifecycle details, per round", ""]
        for n in names:
            for i, life in enumerate(lives.get(n, [])):
                line = f"- {n}, round {i + 1}: {summary(life)}"
                if life.reload_load is not None:
                    load = life.reload_load
                    errs = ", ".join(f"{k} {v}" for k, v in load.errors.items() if v) or "none"
                    line += (
                        f"; under reloads: {load.requests:,} requests, errors {errs}, p99 "
                        f"{load.p99_ms:.1f} ms, {life.reloads_done} reloads done"
                    )
                if life.reload_note:
                    line += f"; note: {life.reload_note}"
                for failure in life.failures:
                    line += f"; FAILED {failure}"
                out.append(line)

    problems = [f"- {n}, {key}: {why}" for (n, key), why in failed.items()]
    if problems:
        out += ["", "## Failures", "", *problems]
    return "\n".join(out) + "\n"


def draw(
    path: Path, names: list[str], rows: list[Row], results: dict[tuple[str, str], list[Run]],
    title: str,
) -> str | None:  # fmt: skip
    """A PNG of requests/s and p99 per server and row; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(15, 10), constrained_layout=True)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs, rates, p99s = [], [], []
        for j, row in enumerate(rows):
            got = results.get((name, row.key))
            if got:
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                rates.append(median([r.load.rps for r in got]))
                p99s.append(median([r.load.p99_ms for r in got]))
        top.bar(xs, rates, width, label=name)
        bottom.bar(xs, p99s, width, label=name)
    labels = [f"{r.workload.short}\n{r.workers} worker{'s' * (r.workers > 1)}" for r in rows]
    for ax in (top, bottom):
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    top.set_ylabel("requests/s (median)")
    top.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    bottom.set_ylabel("p99 latency, ms (median, log scale)")
    bottom.set_yscale("log")
    bottom.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    bottom.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:g}"))
    bottom.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.legend(
        *top.get_legend_handles_labels(), loc="outside lower center", ncols=len(names), fontsize=9
    )
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# -- main -----------------------------------------------------------------------------------


def select_rows(tokens: list[str] | None) -> tuple[list[Row], set[str]]:
    rows = [Row(w, workers) for w in WORKLOADS for workers in (1, 2)]
    if not tokens:
        return rows, set(LIFECYCLE_ROWS)
    known = {"throughput", "lifecycle", *LIFECYCLE_ROWS, *(w.name for w in WORKLOADS)}
    known |= {r.key for r in rows}
    unknown = [t for t in tokens if t not in known]
    if unknown:
        choices = ", ".join(sorted(known))
        raise SystemExit(f"unknown --rows {', '.join(unknown)}; choose from {choices}")
    chosen = [r for r in rows if {"throughput", r.key, r.workload.name} & set(tokens)]
    life = {r for r in LIFECYCLE_ROWS if {"lifecycle", r} & set(tokens)}
    return chosen, life


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", choices=["wrk", "prefork-load"], default="wrk")
    parser.add_argument("--load-workers", type=int, default=1, help="prefork load -w")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 s runs, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5, help="seconds per throughput run")
    parser.add_argument("--spread-trials", type=int, default=10)
    parser.add_argument("--gap", type=float, default=1.0, help="seconds of load between reloads")
    parser.add_argument("--kill-timeout", type=float, default=20.0)
    parser.add_argument(
        "--only", nargs="+", choices=SERVERS, metavar="NAME", help=", ".join(SERVERS)
    )
    parser.add_argument(
        "--rows", nargs="+", metavar="ROW",
        help="throughput, lifecycle, a workload (hello close json echo sleep, or e.g. hello-w1), "
        "or a lifecycle row (" + " ".join(LIFECYCLE_ROWS) + ")",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="where the results go (see above)")
    parser.add_argument(
        "--worktree", action="store_true",
        help="measure prefork as it is in this checkout (default: a snapshot of HEAD)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    # SIGINT and SIGTERM unwind, so that the servers started are stopped (a shell starts a
    # background job with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.rounds, args.duration, args.spread_trials, args.gap = 1, 1, 3, 0.5
    began = time.monotonic()
    args.loadavg = os.getloadavg()
    date = datetime.date.today().isoformat()
    rows, selected = select_rows(args.rows)
    out_dir = args.out
    if out_dir is None:
        if args.quick or args.only or args.rows:
            out_dir = Path(tempfile.mkdtemp(prefix="publish-"))
        else:
            out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="publish-work-"))
    args.tree = prefork_tree(workdir, args.worktree)
    driver: Driver = (
        Wrk(workdir) if args.driver == "wrk" else PreforkLoad(workdir, args.load_workers)
    )
    if why := driver.available():
        print(f"{args.driver}: {why}", file=sys.stderr)
        return 2
    driver_version = driver.version()
    names, skipped = [], {}
    for name in SERVERS:
        if args.only and name not in args.only:
            continue
        if why := missing(name):
            skipped[name] = why
            print(f"skipping {name}: {why}", file=sys.stderr)
        else:
            names.append(name)
    box = machine()
    print(f"{box['cpu']}, CPUs: {box['cores']}, {box['kernel']}, {box['python']}")
    print(f"prefork {args.tree}; load: {driver_version}; results to {out_dir}", flush=True)
    failed: dict[tuple[str, str], str] = {}
    results = throughput(args, driver, names, rows, workdir, failed) if rows else {}
    lives = lifecycle(args, driver, names, selected, workdir) if selected else {}
    took = time.monotonic() - began
    charted = False
    if rows and results:
        title = f"prefork and its peers, {date}: {box['cpu']}, {driver.describe()}"
        for stem in (date, "latest"):
            if why := draw(out_dir / f"{stem}.png", names, rows, results, title):
                print(why, file=sys.stderr)
                break
        else:
            charted = True
    for stem in (date, "latest"):
        text = render(
            args, driver, driver_version, names, skipped, rows, results, lives, failed,
            selected, took, f"{stem}.png" if charted else None, date, argv,
        )  # fmt: skip
        (out_dir / f"{stem}.md").write_text(text)
    print()
    print(text)
    print(f"wrote {out_dir / (date + '.md')}, {out_dir / 'latest.md'}", end="")
    print(f", {out_dir / 'latest.png'}" if charted else "")
    print(f"the run took {took / 60:.1f} min")
    for name in names:
        for log in sorted(workdir.glob(f"{name}-w*.log")):
            text = log.read_text(errors="replace").strip()
            if text and any(n == name for n, _ in failed):
                print(f"\n{log.name}:\n{text[-1500:]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

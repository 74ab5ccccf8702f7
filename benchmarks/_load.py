"""The load publish.py puts on a server: the workloads, and the two load generators that can
drive them (wrk, or ``python -m prefork load``) behind one interface, each read into a
``Load``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from _peers import ECHO_BODY, ECHO_SCRIPT, Server, version

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
    websocket: bool = False  # text messages of ``size`` bytes echoed (ws_bench.py's client)


WORKLOADS = [
    Workload("hello", "hello", "hello", "/", 13),
    Workload("close", "hello, Connection: close", "Connection:\nclose", "/", 13, close=True),
    Workload("json", "JSON 1 KiB", "JSON 1 KiB", "/json", 1024),
    Workload("echo", "POST echo 64 KiB", "POST echo\n64 KiB", "/echo", len(ECHO_BODY), "POST"),
    Workload(
        "sleep", "20 ms await, 256 conns", "20 ms await\n256 conns", "/sleep", 13, connections=256
    ),
    Workload("fastapi", "FastAPI hello", "FastAPI\nhello", "/fastapi", 13),
    Workload("ws", "WebSocket echo 64 B (msgs/s)", "WebSocket\necho 64 B", "/", 64, websocket=True),
]


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

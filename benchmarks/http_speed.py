"""Requests/s of prefork, in each of its HTTP parser modes, against uvicorn, gunicorn and
granian, on five workloads, in one run.

    python benchmarks/http_speed.py [--rounds 3] [--duration 5] [--connections 64]
                                    [--only NAME...] [--workloads NAME...]

Every server serves examples/bench_apps.py (one raw ASGI app, with lifespan) on 127.0.0.1, a
port the OS picks, at log level warning and without an access log:

    prefork-auto        prefork serve --http auto  (a fast path for common heads, else h11)
    prefork-base        prefork-auto from the source tree $PREFORK_BASE (an A/B in one run;
                        skipped when it is not set)
    prefork-h11         prefork serve --http h11
    uvicorn-h11         uvicorn --http h11 --loop uvloop
    uvicorn-httptools   uvicorn --http httptools --loop uvloop  (what uvicorn[standard] runs)
    gunicorn-uvicorn    gunicorn -k uvicorn.workers.UvicornWorker  (uvloop + httptools; the
                        uvicorn-worker package's class instead when that is installed)
    gunicorn-asgi       gunicorn -k asgi --asgi-loop uvloop  (gunicorn >= 25; its C parser
                        when gunicorn_h1c is installed, else its Python one)
    granian             granian --interface asgi --loop uvloop --http 1

The workloads, each with `wrk -t1 -c64` (--connections):

    hello       GET / ("Hello, world!", 13 bytes), keep-alive
    close       the same with `Connection: close`: a new connection per request
    json        GET /json, a JSON document of 1 KiB serialized on each request
    echo        POST /echo with a 64 KiB body (a wrk Lua script), which the app reads whole
                and sends back
    hello-w2    hello with 2 workers

With one worker, each server (master and worker, when it has one) is pinned to one CPU and wrk
to another (`taskset -c`). hello-w2 pins no process to one CPU: the two workers and wrk share
the same two CPUs (all of this machine's when it has two).

Before measuring, each server must have run the app's lifespan startup in every worker (polled,
never slept for) and must answer each workload's request with 200 and the expected body (the
echo byte for byte); during a run, wrk's non-2xx responses and socket errors are printed, and
the bytes wrk read per response must cover the body. The servers take turns over --rounds
rounds, the order reversed every other round, so that machine noise hits them alike.

Prints a Markdown table of median requests/s (rows: servers, columns: workloads); the ratios
of prefork in each mode to uvicorn-httptools and to granian (the median of the ratios taken
inside each round, where both ran close together in time); and, as a sanity check, the share
of one CPU that the server (all its processes) and wrk used (wrk near 100% would be the
bottleneck) and "others", the share of the two CPUs that other processes and interrupts took
(noise: a figure far from 0 means the run was disturbed), medians. Then whatever a server
wrote to its stdout or stderr, and how long the run took. Needs wrk (apt-get install wrk); a
peer that is not installed is skipped and named (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _peers import (
    ECHO_BODY,
    ECHO_SCRIPT,
    ROOT,
    Server,
    check,
    missing,
    table,
    uvicorn_worker,
    version,
)
from _rounds import Pins, Rounds, metered

SERVERS = [
    "prefork-auto",
    "prefork-base",
    "prefork-h11",
    "uvicorn-h11",
    "uvicorn-httptools",
    "gunicorn-uvicorn",
    "gunicorn-asgi",
    "granian",
]
SUBJECTS = ["prefork-auto", "prefork-h11"]
BASES = ["uvicorn-httptools", "granian", "prefork-base"]


@dataclass(frozen=True)
class Workload:
    name: str
    title: str  # the table's column
    path: str
    size: int  # of the response body
    method: str = "GET"
    close: bool = False  # Connection: close on every request
    workers: int = 1  # one: server and wrk pinned to a CPU each; more: both share two CPUs

    @property
    def key(self) -> str:
        return self.name


WORKLOADS = [
    Workload("hello", "hello", "/", 13),
    Workload("close", "hello, Connection: close", "/", 13, close=True),
    Workload("json", "JSON 1 KiB", "/json", 1024),
    Workload("echo", "POST echo 64 KiB", "/echo", len(ECHO_BODY), method="POST"),
    Workload("hello-w2", "hello, 2 workers", "/", 13, workers=2),
]


# -- the runs -----------------------------------------------------------------------------


@dataclass
class Run:
    rate: float  # requests/s
    server_cpu: float  # share of one CPU, all the server's processes together
    wrk_cpu: float  # share of one CPU
    others: float  # share of the benchmark's CPUs that other processes and interrupts used


UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def measure(
    server: Server, workload: Workload, args: argparse.Namespace, seconds: float,
    cpus: str | None, script: Path, watched: list[int],
) -> Run:  # fmt: skip
    """One wrk run; raises RuntimeError when wrk fails, reads no rate, or read fewer bytes per
    response than the body has. Prints wrk's non-2xx responses and socket errors. wrk runs
    on ``cpus`` (``taskset -c``) when given; ``watched`` are the CPUs the server and wrk use,
    watched for what else runs there."""
    cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds:g}s"]
    if workload.close:
        cmd += ["-H", "Connection: close"]
    if workload.method == "POST":
        cmd += ["-s", str(script)]
    cmd.append(f"http://127.0.0.1:{server.port}{workload.path}")
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    done, used = metered(
        server,
        watched,
        lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60),
    )
    out = done.stdout
    if done.returncode:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip() or out}")
    for line in out.splitlines():
        if "Non-2xx" in line or "Socket errors" in line:
            print(f"    {server.label}, {workload.name}: wrk reported {line.strip()}", flush=True)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in [\d.]+\w+, ([\d.]+)([KMGT]?B) read", out)
    if rate is None or total is None:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    requests = int(total.group(1))
    per_response = float(total.group(2)) * UNITS[total.group(3)] / max(1, requests)
    if per_response < 0.98 * workload.size:  # wrk rounds what it read to 3 digits or so
        raise RuntimeError(
            f"wrk read {per_response:.0f} bytes per response, fewer than the body's "
            f"{workload.size}:\n{out}"
        )
    return Run(
        rate=float(rate.group(1)),
        server_cpu=used.server_cpu,
        wrk_cpu=used.load_cpu,
        others=used.others,
    )


# -- the report ---------------------------------------------------------------------------


def describe(cpus: list[int], args: argparse.Namespace) -> str:
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout

    commit = git("log", "-1", "--format=%h").strip()
    if git("status", "--porcelain", "--", "prefork").strip():
        commit += " + uncommitted changes in prefork/"
    spec = importlib.util.find_spec("prefork")
    origin = Path(spec.origin).parent.parent if spec and spec.origin else "?"
    parser = "C (gunicorn_h1c)" if importlib.util.find_spec("gunicorn_h1c") else "Python"
    pinning = (
        f"1 worker: servers on CPU {cpus[0]}, wrk on CPU {cpus[1]}; 2 workers: servers and wrk "
        f"on CPUs {cpus[0]},{cpus[1]}"
        if len(cpus) >= 2
        else "one CPU only: servers and wrk share it"
    )
    return "\n".join([
        f"prefork {commit} (from {origin}), Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; {pinning}",
        f"uvicorn {version('uvicorn')}, httptools {version('httptools')}, "
        f"uvloop {version('uvloop')}, gunicorn {version('gunicorn')} (asgi worker's parser: "
        f"{parser}; gunicorn-uvicorn: {uvicorn_worker()}), granian {version('granian')}",
        f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} rounds, medians",
    ])  # fmt: skip


def report(
    names: list[str], workloads: list[Workload], results: dict[tuple[str, str], list[Run | None]],
    failed: dict[tuple[str, str], str],
) -> None:  # fmt: skip
    def runs(name: str, w: Workload) -> list[Run]:
        return [r for r in results.get((name, w.name), []) if r is not None]

    def cell(name: str, w: Workload, show: str) -> str:
        got = runs(name, w)
        if not got:
            return "failed" if (name, w.name) in failed else "-"
        if show == "rate":
            return f"{statistics.median(r.rate for r in got):,.0f}"
        srv = statistics.median(r.server_cpu for r in got)
        cli = statistics.median(r.wrk_cpu for r in got)
        others = statistics.median(r.others for r in got)
        return f"{srv:.0%} / {cli:.0%} / {others:.0%}"

    head = [w.title for w in workloads]
    print("\nRequests/s (median):\n")
    print(table(["server", *head], [[n, *(cell(n, w, "rate") for w in workloads)] for n in names]))
    rows = []
    for subject in (s for s in SUBJECTS if s in names):
        for base in (b for b in BASES if b in names):
            row = [f"{subject} / {base}"]
            for w in workloads:
                pairs = zip(results[subject, w.name], results[base, w.name], strict=True)
                ratios = [a.rate / b.rate for a, b in pairs if a and b]
                row.append(f"{statistics.median(ratios):.2f}x" if ratios else "-")
            rows.append(row)
    if rows:
        print("\nRatios (median of the ratios inside each round):\n")
        print(table(["ratio", *head], rows))
    print(
        "\nCPU, server / wrk / others (medians; server and wrk: the share of one CPU, the "
        "server's\nprocesses together; others: the share of both CPUs that other processes "
        "and interrupts\ntook, i.e. noise):\n"
    )
    print(table(["server", *head], [[n, *(cell(n, w, "cpu") for w in workloads)] for n in names]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--only", nargs="+", choices=SERVERS, metavar="NAME", help=", ".join(SERVERS)
    )
    parser.add_argument(
        "--workloads", nargs="+", choices=[w.name for w in WORKLOADS], metavar="NAME",
        help=", ".join(w.name for w in WORKLOADS),
    )  # fmt: skip
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("install wrk: apt-get install wrk", file=sys.stderr)
        return 2
    began = time.monotonic()
    names = [n for n in SERVERS if not args.only or n in args.only]
    for name in list(names):
        why = missing(name)
        if why:
            print(f"skipping {name}: {why}", file=sys.stderr)
            names.remove(name)
    workloads = [w for w in WORKLOADS if not args.workloads or w.name in args.workloads]
    pins = Pins.here()
    print(describe(pins.cpus, args), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="http_speed-"))
    script = workdir / "echo.lua"
    script.write_text(ECHO_SCRIPT)
    failed: dict[tuple[str, str], str] = {}

    def one(server: Server, w: Workload, seconds: float) -> Run:
        return measure(server, w, args, seconds, pins.load(w.workers), script, pins.watched)

    def show(w: Workload, server: Server, run: Run) -> str:
        return (
            f"{w.name:9} {server.label:22} {run.rate:9.0f} req/s   server CPU "
            f"{run.server_cpu:4.0%}, wrk CPU {run.wrk_cpu:4.0%}, others {run.others:4.0%}"
        )

    with Rounds(names, workloads, workdir, pins, one, failed) as rounds:
        rounds.prepare(check)
        print(f"ready and checked in {time.monotonic() - began:.0f} s\n", flush=True)
        results = rounds.run(args.rounds, args.duration, show)
    report(names, workloads, results, failed)
    if failed:
        print("\nFailed:")
        for (name, workload), why in failed.items():
            print(f"- {name}, {workload}: {why}")
    for server in rounds.servers.values():
        text = server.text().strip()
        if text:
            print(f"\n{server.label} wrote ({server.log}):\n{text[-1500:]}")
    print(f"\none run took {(time.monotonic() - began) / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

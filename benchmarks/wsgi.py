"""Requests/s of prefork serving WSGI apps against the WSGI servers users run today (issue 22),
in one run.

    python benchmarks/wsgi.py [--rounds 3] [--duration 5] [--threads 4] [--only NAME...]
                              [--apps plain flask] [--workers 1 2] [--workloads NAME...]
                              [--out FILE.md]

Every server serves examples/bench_wsgi_apps.py on 127.0.0.1, a port the OS picks, at log
level warning and without an access log, with --threads threads per worker where it has
threads:

    prefork-wsgi        prefork serve --interface wsgi --threads N
    gunicorn-gthread    gunicorn -k gthread --threads N
    gunicorn-sync       gunicorn -k sync  (one request at a time per worker, no keep-alive)
    granian-wsgi        granian --interface wsgi --http 1 --blocking-threads N
    uvicorn-a2wsgi      uvicorn --http httptools --loop uvloop, the app wrapped by a2wsgi's
                        WSGIMiddleware with N threads

The apps: ``plain`` (a bare WSGI callable) and ``flask`` (the same routes in Flask). The
workloads, each with ``wrk -t1 -c64``, with 1 and with 2 workers (--workers):

    hello       GET / ("Hello, world!", 13 bytes), keep-alive
    json        GET /json, a JSON document of 1 KiB serialized on each request
    echo        POST /echo with a 64 KiB body, read whole and sent back

With one worker, each server (master and worker) is pinned to one CPU and wrk to the other
(``taskset -c``); with two, the workers and wrk share both CPUs (benchmarks/_rounds.py's
``Pins``, as every throughput benchmark here). Before measuring, each server must have
imported the app in every worker (polled) and must answer each workload's request with 200
and the expected body; the servers take turns over --rounds rounds, the order reversed every
other round, so that machine noise hits them alike (_rounds.py).

Prints, and writes to --out when given, a Markdown table per app of median requests/s (rows:
servers, columns: workload and workers), the ratios of prefork-wsgi to gunicorn-gthread (the
server it replaces, same threads) and to granian-wsgi (the median of the ratios inside each
round), and the CPU each side used. Needs wrk (apt-get install wrk); a peer that is not
installed is skipped and named (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _load import WORKLOADS, Wrk
from _peers import Server, check, missing, table, version, wsgi_threads
from _rounds import Pins, Rounds
from _throughput import Row, Run, measure

SERVERS = ["prefork-wsgi", "gunicorn-gthread", "gunicorn-sync", "granian-wsgi", "uvicorn-a2wsgi"]
SUBJECT = "prefork-wsgi"
BASES = ["gunicorn-gthread", "granian-wsgi"]
APPS = {"plain": "examples.bench_wsgi_apps:app", "flask": "examples.bench_wsgi_apps:flask_app"}
#: What each app needs importable besides its server.
APP_NEEDS = {"plain": [], "flask": ["flask"]}
NAMES = ["hello", "json", "echo"]

Results = dict[tuple[str, str], list[Run | None]]  # (server, row key) -> a run per round


def starter(app: str, threads: int) -> Callable[[str, int, str | None, Path], Server]:
    """How Rounds starts a server on ``app`` with ``threads`` threads per worker."""

    def start(name: str, workers: int, cpus: str | None, workdir: Path) -> Server:
        return Server(name, workers, cpus, workdir, app=app, extra=wsgi_threads(name, threads))

    return start


def rows_for(workloads: list[str], workers: list[int]) -> list[Row]:
    by_name = {w.name: w for w in WORKLOADS}
    return [Row(by_name[name], n) for n in workers for name in workloads]


def rate_cell(runs: list[Run | None], failed: bool) -> str:
    done = [r.load.rps for r in runs if r is not None]
    if not done:
        return "failed" if failed else "-"
    return f"{statistics.median(done):,.0f}"


def ratio_cell(subject: list[Run | None], base: list[Run | None]) -> str:
    """The median of the ratios of the rounds where both ran."""
    ratios = [
        a.load.rps / b.load.rps
        for a, b in zip(subject, base, strict=False)
        if a is not None and b is not None and b.load.rps
    ]
    return f"{statistics.median(ratios):.2f}x" if ratios else "-"


def cpu_cell(runs: list[Run | None]) -> str:
    done = [r for r in runs if r is not None]
    if not done:
        return "-"
    server = statistics.median(r.server_cpu for r in done)
    driver = statistics.median(r.driver_cpu for r in done)
    others = statistics.median(r.others for r in done)
    return f"{server:.0%} / {driver:.0%} / {others:.0%}"


def render(
    app: str, names: list[str], rows: list[Row], results: Results,
    failed: dict[tuple[str, str], str],
) -> str:  # fmt: skip
    """The Markdown for one app: requests/s, ratios, CPU."""
    head = ["server", *(r.key for r in rows)]

    def runs(name: str, row: Row) -> list[Run | None]:
        return results.get((name, row.key), [])

    rates = [[n, *(rate_cell(runs(n, r), (n, r.key) in failed) for r in rows)] for n in names]
    ratios = [
        [f"{SUBJECT} / {base}", *(ratio_cell(runs(SUBJECT, r), runs(base, r)) for r in rows)]
        for base in BASES
        if SUBJECT in names and base in names
    ]
    cpu = [[n, *(cpu_cell(runs(n, r)) for r in rows)] for n in names]
    parts = [f"### {app}\n\nRequests/s (median):\n", table(head, rates)]
    if ratios:
        parts += ["\nRatios (median of the ratios inside each round):\n", table(head, ratios)]
    parts += ["\nCPU, server / wrk / others (medians, share of one CPU):\n", table(head, cpu)]
    return "\n".join(parts)


def describe(pins: Pins, args: argparse.Namespace) -> str:
    cpus = pins.cpus
    pinning = (
        f"1 worker: servers on CPU {cpus[0]}, wrk on CPU {cpus[1]}; 2 workers: both on "
        f"CPUs {cpus[0]},{cpus[1]}"
        if len(cpus) >= 2
        else "one CPU only: servers and wrk share it"
    )
    return (
        f"prefork {version('prefork')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; {pinning}\n"
        f"gunicorn {version('gunicorn')}, granian {version('granian')}, uvicorn "
        f"{version('uvicorn')}, a2wsgi {version('a2wsgi')}, flask {version('flask')}\n"
        f"{args.threads} threads per worker; wrk -t1 -c64 -d{args.duration:g}s, "
        f"{args.rounds} rounds, medians"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker")
    parser.add_argument("--only", nargs="+", choices=SERVERS, metavar="NAME")
    parser.add_argument("--apps", nargs="+", choices=sorted(APPS), default=list(APPS))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--workloads", nargs="+", choices=NAMES, default=NAMES)
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("install wrk: apt-get install wrk", file=sys.stderr)
        return 2
    began = time.monotonic()
    # uvicorn-a2wsgi's thread count: examples/bench_wsgi_apps.py reads it in the server.
    os.environ["BENCH_WSGI_THREADS"] = str(args.threads)
    names = [n for n in SERVERS if not args.only or n in args.only]
    for name in list(names):
        if why := missing(name):
            print(f"skipping {name}: {why}", file=sys.stderr)
            names.remove(name)
    pins = Pins.here()
    header = describe(pins, args)
    print(header, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="wsgi-bench-"))
    driver = Wrk(workdir)
    rows = rows_for(args.workloads, args.workers)
    sections, failures, logs = [header], [], []
    for app in args.apps:
        if absent := [m for m in APP_NEEDS[app] if importlib.util.find_spec(m) is None]:
            print(f"skipping app {app}: {', '.join(absent)} not installed", file=sys.stderr)
            continue
        appdir = workdir / app
        appdir.mkdir()
        failed: dict[tuple[str, str], str] = {}

        def one(server: Server, r: Row, seconds: float) -> Run:
            return measure(driver, server, r.workload, seconds, pins.load(r.workers), pins.watched)

        def show(r: Row, server: Server, run: Run, app: str = app) -> str:
            return (
                f"{app:5} {r.key:8} {server.label:22} {run.load.rps:9.0f} req/s  "
                f"server CPU {run.server_cpu:4.0%}, wrk CPU {run.driver_cpu:4.0%}, "
                f"others {run.others:4.0%}"
            )

        start = starter(APPS[app], args.threads)
        with Rounds(names, rows, appdir, pins, one, failed, start) as rounds:
            rounds.prepare(lambda server, r: check(server, r.workload))
            results = rounds.run(args.rounds, args.duration, show)
        sections.append(render(app, names, rows, results, failed))
        failures += [f"- {app}, {name}, {key}: {why}" for (name, key), why in failed.items()]
        for server in rounds.servers.values():
            if text := server.text().strip():
                logs.append(f"{app}, {server.label} wrote ({server.log}):\n{text[-1000:]}")
    if failures:
        sections.append("Failed:\n\n" + "\n".join(failures))
    markdown = "\n\n".join(sections) + "\n"
    print("\n" + markdown)
    if args.out:
        args.out.write_text(markdown)
    for log in logs:
        print(log)
    print(f"one run took {(time.monotonic() - began) / 60:.1f} min")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

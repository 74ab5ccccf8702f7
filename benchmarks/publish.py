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
    [fastapi] GET /fastapi, the hello of a FastAPI app (what a framework leaves of the speed)
    [ws]     WebSocket echo: 64 connections, each a 64-byte text message out and its echo back
             at a time (benchmarks/ws_bench.py's client, every echo checked); messages/s, no
             latency measured

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
import datetime
import io
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _lifecycle import LIFECYCLE_ROWS, lifecycle
from _load import WORKLOADS, Driver, PreforkLoad, Wrk
from _peers import ROOT, missing
from _report import draw, machine, render
from _throughput import Row, throughput

SERVERS = [
    "prefork",
    "uvicorn-h11",
    "uvicorn-httptools",
    "gunicorn-uvicorn",
    "gunicorn-asgi",
    "granian",
    "hypercorn",
]


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
        help="throughput, lifecycle, a workload (hello close json echo sleep fastapi ws, or e.g. "
        "hello-w1), "
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

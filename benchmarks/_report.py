"""publish.py's results written out: the Markdown report (machine, servers, throughput and
lifecycle tables, what each server offers) and the chart."""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

from _lifecycle import (
    LIFECYCLE_OPTIONS,
    LIFECYCLE_WORKERS,
    RELOADS_UNDER_LOAD,
    SPREAD_CONNECTIONS,
    Life,
    summary,
)
from _load import WORKLOADS, Driver
from _peers import command, table, version
from _throughput import Row, Run

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
            value = median([r.load.p99_ms for r in got])
            return "-" if math.isnan(value) else f"{value:.2f}"  # not measured (WebSocket)

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

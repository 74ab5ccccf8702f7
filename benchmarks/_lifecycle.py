"""publish.py's lifecycle rows: reload under load, reload onto broken code, kill -9, start-up,
memory and spread, each on a server started afresh for each server and round."""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _load import WORKLOADS, Driver, Load, drive, finish
from _peers import ROOT, Server, request
from _probes import (
    Prober,
    all_replaced,
    connections_at_once,
    first_answer,
    owners,
    wait_closed,
    wait_for,
)
from _proc import memory_kib
from _rounds import alternated

#: Options the lifecycle rows add: what the server offers to survive a dead worker.
LIFECYCLE_OPTIONS = {"granian": ["--respawn-failed-workers"]}
LIFECYCLE_ROWS = ["reload", "broken", "kill", "startup", "memory", "spread"]
LIFECYCLE_WORKERS = 2
RELOADS_UNDER_LOAD = 3
SPREAD_CONNECTIONS = 16
BROKEN = '\nraise RuntimeError("benchmarks/publish.py: a broken deploy")\n'


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
    for round_no, order in alternated(args.rounds, names):
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

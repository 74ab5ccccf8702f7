"""publish.py's throughput rows: each workload with 1 and with 2 workers, every server started
once per number of workers and pinned, the servers taking turns over the rounds."""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _load import Driver, Load, Workload, drive, finish
from _peers import Server, check
from _proc import idle_seconds


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


# -- throughput -----------------------------------------------------------------------------


@dataclass
class Run:
    load: Load
    server_cpu: float  # share of one CPU, all the server's processes together
    driver_cpu: float  # share of one CPU
    others: float  # share of the benchmark's CPUs that other processes and interrupts used


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

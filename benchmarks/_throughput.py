"""publish.py's throughput rows: each workload with 1 and with 2 workers, every server started
once per number of workers and pinned, the servers taking turns over the rounds."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import ws_bench
from _load import ERRORS, Driver, Load, Workload, drive, finish
from _peers import Server, check
from _rounds import Pins, Rounds, Start, metered


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
    if w.websocket:
        return measure_websocket(server, w, seconds, cpus, watched)
    load, used = metered(
        server, watched, lambda: finish(driver, drive(driver, server, w, seconds, cpus), seconds)
    )
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
    return Run(load=load, server_cpu=used.server_cpu, driver_cpu=used.load_cpu, others=used.others)


def measure_websocket(
    server: Server, w: Workload, seconds: float, cpus: str | None, watched: list[int]
) -> Run:
    """One run of ws_bench.py's client (its connections each echo one message at a time,
    checked byte for byte): messages/s as the rate; no latency is measured."""
    asked = argparse.Namespace(connections=w.connections, clients=1, size=w.size)
    cpu = int(cpus) if cpus is not None and cpus.isdigit() else None
    with ws_bench.pinned(cpu):  # the client processes are forked here
        got = ws_bench.measure(server, asked, seconds, watched)  # type: ignore[arg-type]
    nan = math.nan
    load = Load(
        requests=round(got.rate * seconds), seconds=seconds, rps=got.rate,
        bytes=round(got.rate * seconds) * w.size, p50_ms=nan, p99_ms=nan, max_ms=nan,
        errors=dict.fromkeys(ERRORS, 0),
    )  # fmt: skip
    return Run(load=load, server_cpu=got.server_cpu, driver_cpu=got.client_cpu, others=got.others)


def throughput(
    args: argparse.Namespace, driver: Driver, names: list[str], rows: list[Row],
    workdir: Path, failed: dict[tuple[str, str], str], start: Start = Server,
) -> dict[tuple[str, str], list[Run]]:  # fmt: skip
    """The rows on the servers ``names`` (the round loop of _rounds.py): {(name, row key):
    the runs that succeeded}."""
    pins = Pins.here()

    def one(server: Server, r: Row, seconds: float) -> Run:
        return measure(driver, server, r.workload, seconds, pins.load(r.workers), pins.watched)

    def show(r: Row, server: Server, run: Run) -> str:
        return (
            f"{r.key:9} {server.label:24} {run.load.rps:9.0f} req/s  p99 {run.load.p99_ms:7.2f} "
            f"ms  server CPU {run.server_cpu:4.0%}, {driver.name} CPU {run.driver_cpu:4.0%}, "
            f"others {run.others:4.0%}"
        )

    with Rounds(names, rows, workdir, pins, one, failed, start) as rounds:
        # A WebSocket row's client checks every echo itself.
        rounds.prepare(
            lambda server, r: None if r.workload.websocket else check(server, r.workload)
        )
        runs = rounds.run(args.rounds, args.duration, show)
    results: dict[tuple[str, str], list[Run]] = {}
    for key, got in runs.items():
        if done := [run for run in got if run is not None]:
            results[key] = done
    return results

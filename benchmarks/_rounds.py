"""The round loop that http_speed.py and publish.py share.

Every server is started once per number of workers, pinned (``Pins``), made ready (every
worker through the app's lifespan startup) and checked on each case's request, with a 1 s
warm-up run; then the servers take turns over the rounds, the order reversed every other
round (``alternated``), so that machine noise hits them alike. ``metered`` runs the load
generator and reads what each side used: the server's CPU, the load generator's, and what
other processes took on the two CPUs. A server that fails is recorded in ``failed`` and
skipped from then on; the others carry on.

What a case is (a workload, a row), how one run is measured and what it reports stay with
each script: the runner takes them as ``check``, ``measure`` and ``show``.
"""

from __future__ import annotations

import http.client
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from _peers import Server
from _proc import idle_seconds

T = TypeVar("T")


def alternated(rounds: int, names: list[str]) -> Iterator[tuple[int, list[str]]]:
    """Each round's index and the order the servers take their turns in: as given in even
    rounds, reversed in odd ones."""
    for round_no in range(rounds):
        yield round_no, names if round_no % 2 == 0 else names[::-1]


@dataclass(frozen=True)
class Pins:
    """Where the servers and the load generator run (``taskset -c``): with one worker, the
    server on the first CPU and the load generator on the second; with more, both on both.
    ``watched``: the CPUs where what else runs is measured."""

    cpus: list[int]  # fewer than two: nothing pinned
    watched: list[int]

    @classmethod
    def here(cls) -> Pins:
        """The first two CPUs this process may use; nothing pinned without taskset."""
        cpus = sorted(os.sched_getaffinity(0))[:2]
        watched = list(cpus)
        if len(cpus) >= 2 and shutil.which("taskset") is None:
            print("taskset not found (util-linux): nothing pinned", file=sys.stderr)
            cpus = cpus[:1]
        return cls(cpus, watched)

    def server(self, workers: int) -> str | None:
        return self._cpus(workers, 0)

    def load(self, workers: int) -> str | None:
        return self._cpus(workers, 1)

    def _cpus(self, workers: int, which: int) -> str | None:
        if len(self.cpus) < 2:
            return None
        return str(self.cpus[which]) if workers == 1 else f"{self.cpus[0]},{self.cpus[1]}"


@dataclass(frozen=True)
class Usage:
    """What one load run used, over its wall-clock time."""

    server_cpu: float  # share of one CPU, all the server's processes together
    load_cpu: float  # share of one CPU: the load generator (this process's children)
    others: float  # share of the watched CPUs that other processes and interrupts took


def metered(server: Server, watched: list[int], run: Callable[[], T]) -> tuple[T, Usage]:
    """``run()`` (which starts the load generator and waits for it), and what it used."""
    server_cpu = server.cpu_seconds()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    idle = idle_seconds(watched)
    began = time.perf_counter()
    got = run()
    elapsed = time.perf_counter() - began
    idle = idle_seconds(watched) - idle
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = server.cpu_seconds() - server_cpu
    load_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return got, Usage(
        server_cpu=server_cpu / elapsed,
        load_cpu=load_cpu / elapsed,
        others=1 - (idle + server_cpu + load_cpu) / (elapsed * len(watched)),
    )


class Case(Protocol):
    """What a script measures each server on: a workload, a row."""

    @property
    def key(self) -> str: ...  # in ``failed`` and in the results
    @property
    def workers(self) -> int: ...


C = TypeVar("C", bound=Case)
#: How a server is started: (name, workers, its CPUs, workdir) -> Server. Server itself
#: serves examples/bench_apps.py; benchmarks/wsgi.py passes one that serves its WSGI apps.
Start = Callable[[str, int, str | None, Path], Server]
R = TypeVar("R")
#: What a warm-up may raise and still leave the other servers and cases to run.
SETUP_ERRORS = (
    RuntimeError,
    OSError,
    http.client.HTTPException,
    ValueError,
    subprocess.TimeoutExpired,
)


class Rounds(Generic[C, R]):
    """The servers ``names``, each with every number of workers the ``cases`` ask for, run
    from ``workdir``; leaving the ``with`` block stops those started. ``measure(server, case,
    seconds)`` is one run; ``failed`` ({(name, case key): why}) is filled as servers fail;
    ``start`` starts a server."""

    def __init__(
        self,
        names: list[str],
        cases: Sequence[C],
        workdir: Path,
        pins: Pins,
        measure: Callable[[Server, C, float], R],
        failed: dict[tuple[str, str], str],
        start: Start = Server,
    ) -> None:
        self.names = names
        self.cases = cases
        self.workdir = workdir
        self.pins = pins
        self.measure = measure
        self.failed = failed
        self.start = start
        self.servers: dict[tuple[str, int], Server] = {}

    def __enter__(self) -> Rounds[C, R]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for server in self.servers.values():
            server.stop()

    def fail(self, name: str, case: C, why: str) -> None:
        self.failed[name, case.key] = why
        print(f"    {name}, {case.key}: FAILED: {why}", file=sys.stderr, flush=True)

    def prepare(self, check: Callable[[Server, C], None]) -> None:
        """Start every server and wait until each is ready; then, for each case, ``check`` its
        request on each server and warm it up with a 1 s run."""
        for workers in sorted({c.workers for c in self.cases}):
            for name in self.names:
                self.servers[name, workers] = self.start(
                    name, workers, self.pins.server(workers), self.workdir
                )
        for (name, workers), server in self.servers.items():
            try:
                server.wait_ready()
            except RuntimeError as exc:
                for case in self.cases:
                    if case.workers == workers:
                        self.fail(name, case, f"{server.label} {exc}")
        for case in self.cases:
            for name in self.names:
                if (name, case.key) in self.failed:
                    continue
                server = self.servers[name, case.workers]
                try:
                    check(server, case)
                    self.measure(server, case, 1)
                except SETUP_ERRORS as exc:
                    self.fail(name, case, str(exc))

    def run(
        self, rounds: int, seconds: float, show: Callable[[C, Server, R], str]
    ) -> dict[tuple[str, str], list[R | None]]:
        """Each round, each case, the servers in turn: {(name, case key): a run per round,
        None where the server had failed}. ``show`` says a run in the line printed for it."""
        results: dict[tuple[str, str], list[R | None]] = {}
        for round_no, order in alternated(rounds, self.names):
            for case in self.cases:
                for name in order:
                    got = results.setdefault((name, case.key), [])
                    if (name, case.key) in self.failed:
                        got.append(None)
                        continue
                    server = self.servers[name, case.workers]
                    try:
                        run = self.measure(server, case, seconds)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        got.append(None)
                        self.fail(name, case, f"round {round_no + 1}: {exc}")
                        continue
                    got.append(run)
                    print(f"round {round_no + 1}: {show(case, server, run)}", flush=True)
        return results

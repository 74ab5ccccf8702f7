"""The master's side of ``prefork load``: a ``Master`` with one broker of ``LoadWorker``s, the
reports merged as they come (``Tally.absorb``), one progress line a second on stderr, and the
summary (wrk's, or ``--json``'s one line) on stdout.

Each worker tags its reports with the second they cover; the line for a second is printed once
every worker's report for it arrived, so it adds up all of them. The run ends when every worker
said it is done (the master is stopped then) or on Ctrl-C (the workers send what they counted).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import IO, Any

from prefork.core._options import ConfigError
from prefork.core._payloads import WorkerExit, WorkerInfo
from prefork.load._config import LoadConfig
from prefork.load._tally import ERROR_KINDS, Tally
from prefork.load._target import Target
from prefork.load._worker import LoadWorker
from prefork.master._loop import Master


@dataclass
class Run:
    """What the master has heard of one run so far."""

    parts: int
    total: Tally = field(default_factory=Tally)
    # tick -> (workers heard, the sum of their reports, the sum of the times they cover)
    seconds: dict[int, tuple[int, Tally, float]] = field(default_factory=dict)
    elapsed: list[float] = field(default_factory=list)  # each done worker's own duration
    failures: list[str] = field(default_factory=list)

    def absorb(self, report: dict[str, Any], out: IO[str]) -> None:
        """Add a worker's report; print the progress line of a second all workers reported."""
        tick = report.pop("tick")
        last = report.pop("last", False)
        span = float(report.pop("span"))
        self.total.absorb(report)
        if last:
            return
        heard, tally, spans = self.seconds.get(tick, (0, Tally(), 0.0))
        tally.absorb(report)
        self.seconds[tick] = (heard + 1, tally, spans + span)
        if heard + 1 == self.parts:
            del self.seconds[tick]
            print(progress_line(tick, tally, (spans + span) / self.parts), file=out, flush=True)

    def done(self, message: dict[str, Any]) -> bool:
        """A worker's ``{"done": seconds}`` (and what failed, if its driver did); whether
        every worker is done now."""
        self.elapsed.append(float(message["done"]))
        if "failed" in message:
            self.failures.append(str(message["failed"]))
        return len(self.elapsed) == self.parts

    def crashed(self, exit: WorkerExit) -> None:
        self.failures.append(f"worker {exit.id} crashed (code {exit.code}, signal {exit.signal})")

    def say_failures(self, out: IO[str]) -> None:
        for failure in dict.fromkeys(self.failures):  # each distinct one once
            print(f"prefork: error: {failure}", file=out)

    @property
    def duration(self) -> float:
        return max(self.elapsed, default=0.0)


def progress_line(second: int, tally: Tally, span: float) -> str:
    """One second of the run, over every worker (``span``: the time it covered, ~1 s)."""
    latency = tally.latency
    rate = tally.requests / span if span > 0 else 0.0
    return (
        f"{second:4d}s {rate:>10,.0f} req/s  p50 {latency.percentile(50) / 1000:.2f} ms  "
        f"p99 {latency.percentile(99) / 1000:.2f} ms  errors {tally.failed:,}"
    )


def _size(n: float) -> str:
    """Bytes as wrk prints them: 512B, 1.50KB, 52.10MB, 3.00GB."""
    if n < 1024:
        return f"{n:.0f}B"
    for unit in ("KB", "MB"):
        n /= 1024
        if n < 1024:
            return f"{n:.2f}{unit}"
    return f"{n / 1024:.2f}GB"


def summary_text(config: LoadConfig, parts: int, tally: Tally, duration: float) -> str:
    """wrk's summary, with the percentiles it prints under --latency."""
    lat = tally.latency
    ms = {p: lat.percentile(p) / 1000 for p in (50, 75, 90, 99, 99.9)}
    rate = tally.requests / duration if duration else 0.0
    errors = ", ".join(f"{kind} {tally.errors[kind]:,}" for kind in ERROR_KINDS)
    statuses = ", ".join(f"{code} {n:,}" for code, n in sorted(tally.statuses.items()))
    return "\n".join(
        [
            f"  {parts} worker{'s' if parts > 1 else ''} and {config.connections} connections"
            + (f", {config.rate:g} requests/s" if config.rate else ""),
            f"  Latency    p50 {ms[50]:.2f}ms  p75 {ms[75]:.2f}ms  p90 {ms[90]:.2f}ms  "
            f"p99 {ms[99]:.2f}ms  p99.9 {ms[99.9]:.2f}ms  max {lat.max / 1000:.2f}ms  "
            f"mean {lat.mean() / 1000:.2f}ms",
            f"  {tally.requests:,} requests in {duration:.2f}s, {_size(tally.bytes)} read",
            f"  Errors: {errors}",
            f"  Status: {statuses or 'none'}",
            f"Requests/sec: {rate:,.2f}",
            f"Transfer/sec: {_size(tally.bytes / duration if duration else 0)}",
        ]
    )


def check(config: LoadConfig) -> None:
    """What can be checked before forking: the request can be built, the scenario exists.

    A scenario's module is looked for in the working directory first, put on ``sys.path``
    as ``prefork serve`` puts ``--app-dir`` there for the app: the ``prefork`` script, unlike
    ``python -m``, does not. The workers, forked later, inherit the path.
    """
    try:
        Target(config.url, method=config.method, headers=config.headers, body=config.body())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if config.scenario is not None:
        here = os.getcwd()
        if here not in sys.path:
            sys.path.insert(0, here)
        module, _, name = config.scenario.partition(":")
        try:
            found = importlib.import_module(module)
        except Exception as exc:
            raise ConfigError(
                f"scenario {config.scenario!r} cannot be imported: {type(exc).__name__}: {exc}"
            ) from None
        if not callable(getattr(found, name, None)):
            raise ConfigError(f"scenario {config.scenario!r}: {module} has no function {name!r}")


def run(config: LoadConfig, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """Run the load; 0, or 1 with ``--fail-on-error`` when a request failed (or a worker)."""
    check(config)
    usable = len(os.sched_getaffinity(0))
    parts = min(config.workers or usable, config.connections)
    logging.getLogger("prefork").setLevel(logging.WARNING)  # our lines, not the master's
    # SIGTERM stops, as SIGINT does: a drained load master would wait for nothing.
    master = Master(graceful_timeout=config.timeout + 5.0, sigterm="stop")
    broker = master.broker("load", LoadWorker, workers=parts, load=config, parts=parts)
    state = Run(parts)

    def _end() -> None:
        # Once stopping (Ctrl-C), the master leaves when the workers have: a second stop
        # would kill them at once, with a warning.
        if not broker.draining:
            master.stop()

    def _report(report: dict[str, Any], info: WorkerInfo) -> None:
        state.absorb(report, err)

    def _message(message: dict[str, Any], info: WorkerInfo) -> None:
        if state.done(message):
            _end()

    def _crash(exit: WorkerExit) -> None:
        state.crashed(exit)
        _end()  # a replacement would start a run of its own

    broker.on("worker_report", _report)
    broker.on("worker_message", _message)
    broker.on("worker_crash", _crash)
    if not config.json:
        print(f"Running {config.duration:g}s test @ {config.url}", file=out, flush=True)
    master.run()
    state.say_failures(err)
    tally, duration = state.total, state.duration
    if config.json:
        print(json.dumps(tally.summary_json(round(duration, 3))), file=out)
    else:
        print(summary_text(config, parts, tally, duration), file=out)
    failed = tally.failed > 0 or bool(state.failures)
    return 1 if config.fail_on_error and failed else 0

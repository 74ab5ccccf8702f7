"""The master's side of ``prefork load``: a ``Master`` with one broker of ``LoadWorker``s, the
reports merged as they come (``Tally.absorb``), one progress line a second on stderr, and the
summary (wrk's, or ``--json``'s one line) on stdout.

Each worker tags its reports with the second they cover; the line for a second is printed once
every worker's report for it arrived, so it adds up all of them. The run ends when every worker
said it is done (the master is stopped then) or on Ctrl-C (the workers send what they counted).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from prefork.core._options import ConfigError
from prefork.core._payloads import WorkerExit, WorkerInfo
from prefork.core._version import VERSION
from prefork.load import _summary as summary
from prefork.load import _threshold
from prefork.load._config import LoadConfig
from prefork.load._hdrlog import HdrLog
from prefork.load._histogram import Histogram
from prefork.load._tally import Tally
from prefork.load._targets import target_of
from prefork.load._threshold import EXIT_BROKEN
from prefork.load._worker import LoadWorker, split
from prefork.master._loop import Master

#: A worker silent this long past ``--timeout`` is hung (a scenario blocking its loop).
HUNG_AFTER = 3.0
#: Distinct failures of a run said at the end: a worker sending nonsense each second is said
#: by the first ones.
MAX_FAILURES = 20


@dataclass
class Run:
    """What the master has heard of one run so far."""

    parts: int
    total: Tally = field(default_factory=Tally)
    # tick -> (workers heard, the sum of their reports, the sum of the times they cover)
    seconds: dict[int, tuple[int, Tally, float]] = field(default_factory=dict)
    elapsed: list[float] = field(default_factory=list)  # each done worker's own duration
    failures: list[str] = field(default_factory=list)
    series: list[summary.Second] = field(default_factory=list)  # MAX_SERIES + 1 at most
    log: HdrLog | None = None  # --hdr-log
    # What no whole second's line holds (the workers' last reports): the log's last line.
    leftover: Histogram = field(default_factory=Histogram)
    logged: int = 0  # the seconds the log has lines for

    def absorb(self, report: Any, out: IO[str]) -> None:
        """Add a worker's report; print the progress line of a second all workers reported.
        A malformed one changes nothing and is a failure of the run (said once, at the end)."""
        try:
            tick, last, span = _report_header(report)
            self.total.absorb(report)
        except ValueError as exc:
            self.fail(f"a worker sent a malformed report (left out): {str(exc)[:200]}")
            return
        if last:
            if self.log is not None:
                self.leftover.merge(Histogram.from_json(report["latency"]))
            return
        heard, tally, spans = self.seconds.get(tick, (0, Tally(), 0.0))
        tally.absorb(report)
        self.seconds[tick] = (heard + 1, tally, spans + span)
        if heard + 1 == self.parts:
            del self.seconds[tick]
            print(progress_line(tick, tally, (spans + span) / self.parts), file=out, flush=True)
            if len(self.series) <= summary.MAX_SERIES:
                self.series.append(summary.second_of(tick, tally))
            if self.log is not None:
                self.log.interval(tick - 1, (spans + span) / self.parts, tally.latency)
                self.logged = tick

    def end_log(self) -> None:
        """The log's last line: the workers' last reports and any second not every worker
        reported (a worker that died), so the lines add up to the run's whole histogram."""
        if self.log is None:
            return
        for _, tally, _ in self.seconds.values():
            self.leftover.merge(tally.latency)
        if self.leftover.count:
            length = max(0.0, self.duration - self.logged)
            self.log.interval(self.logged, length, self.leftover)

    def done(self, message: Any) -> bool:
        """A worker's ``{"done": seconds}`` (and what failed, if its driver did); whether
        every worker is done now. Anything else is a failure of the run."""
        done = message.get("done") if isinstance(message, dict) else None
        if not isinstance(done, int | float) or isinstance(done, bool) or not 0 <= done < 1e9:
            self.fail(f"a worker sent a malformed message (left out): {message!r:.200}")
            return False
        self.elapsed.append(float(done))
        if "failed" in message:
            self.fail(str(message["failed"])[:500])
        return len(self.elapsed) == self.parts

    def fail(self, failure: str) -> None:
        """A failure of the run, said at the end (``MAX_FAILURES`` distinct ones at most)."""
        if failure not in self.failures and len(self.failures) < MAX_FAILURES:
            self.failures.append(failure)

    def crashed(self, exit: WorkerExit) -> None:
        if exit.cause == "hung":
            self.fail(
                f"worker {exit.id} stopped answering the master and was killed: its event "
                "loop was blocked (a blocking call in the scenario? await, or run it in a thread)"
            )
        else:
            self.fail(f"worker {exit.id} crashed (code {exit.code}, signal {exit.signal})")

    def say_failures(self, out: IO[str]) -> None:
        for failure in self.failures:
            print(f"prefork: error: {failure}", file=out)

    @property
    def duration(self) -> float:
        return max(self.elapsed, default=0.0)


def _report_header(report: Any) -> tuple[int, bool, float]:
    """A report's tick, whether it is a worker's last, and the time it covers, taken out of
    it (what is left is a ``Tally`` report). Raises ValueError when they are malformed."""
    if not isinstance(report, dict):
        raise ValueError(f"not a report: {report!r:.100}")
    tick, last, span = report.pop("tick", None), report.pop("last", False), report.pop("span", None)
    good_span = isinstance(span, int | float) and not isinstance(span, bool) and 0 <= span < 1e9
    if type(tick) is not int or tick < 0 or type(last) is not bool or not good_span:
        raise ValueError(
            f"a report's tick, last and span: {tick!r:.20}, {last!r:.20}, {span!r:.20}"
        )
    return tick, last, float(span)


def progress_line(second: int, tally: Tally, span: float) -> str:
    """One second of the run, over every worker (``span``: the time it covered, ~1 s); the
    sends that left late that second, when some did (the generator is behind its schedule)."""
    latency = tally.latency
    rate = tally.requests / span if span > 0 else 0.0
    line = (
        f"{second:4d}s {rate:>10,.0f} req/s  p50 {latency.percentile(50) / 1000:.2f} ms  "
        f"p99 {latency.percentile(99) / 1000:.2f} ms  errors {tally.failed:,}"
    )
    if tally.late:
        line += f"  behind schedule: {tally.late:,} sends late"
    return line


#: File descriptors a worker needs beside its connections (the loop, its pipes, a timer).
FD_MARGIN = 64


def fd_limit(connections: int, soft: int, hard: int) -> int | None:
    """The soft RLIMIT_NOFILE to set for a worker of ``connections`` (and ``FD_MARGIN`` more
    descriptors); None when ``soft`` will do. Raises ConfigError, in one line, when even the
    hard limit is too low."""
    needed = connections + FD_MARGIN
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return None
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            f"{connections:,} connections per worker need {needed:,} open files, and the hard "
            f"limit is {hard:,}: raise it (ulimit -Hn, LimitNOFILE=) or use more workers (-w) or "
            "fewer connections (-c)"
        )
    return needed


def raise_fd_limit(per_worker: int) -> None:
    """Raise the soft limit of open files (inherited by the workers) to what one worker's
    connections need; ConfigError when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = fd_limit(per_worker, soft, hard)
    if wanted is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def exit_code(doc: dict[str, Any], failures: list[str], broken: list[str], strict: bool) -> int:
    """0; 1 when nothing succeeded, a worker failed, or (``strict``: --fail-on-error) any
    request did; ``EXIT_BROKEN`` when only thresholds broke."""
    succeeded = doc["answered"] - doc["errors"]["status"]
    if succeeded == 0 or failures:
        return 1
    if broken:
        return EXIT_BROKEN
    return 1 if strict and sum(doc["errors"].values()) else 0


def config_json(config: LoadConfig, parts: int) -> dict[str, Any]:
    """The run's options, as ``--json``'s ``config`` says them."""
    return {
        "url": config.url,
        "method": config.method,
        "connections": config.connections,
        "workers": parts,
        "duration_s": config.duration,
        "rate": config.rate,
        "stages": [list(stage) for stage in config.stages],
        "targets": config.targets,
        "timeout_s": config.timeout,
        "scenario": config.scenario,
        "thresholds": list(config.thresholds),
        "start_at": config.start_at,
    }


def check(config: LoadConfig) -> None:
    """What can be checked before forking: the request can be built, the scenario exists.

    A scenario's module is looked for in the working directory first, put on ``sys.path``
    as ``prefork serve`` puts ``--app-dir`` there for the app: the ``prefork`` script, unlike
    ``python -m``, does not. The workers, forked later, inherit the path.
    """
    try:
        target_of(config)
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
    """Run the load; the exit code of ``exit_code``. Raises ConfigError on bad input."""
    check(config)
    with _hdr_log_file(config.hdr_log) as log:
        return _run(config, log, out, err)


@contextlib.contextmanager
def _hdr_log_file(path: str | None) -> Iterator[IO[str] | None]:
    """``--hdr-log``'s file, open for the run (None without it). Raises ConfigError, in one
    line, when it cannot be written."""
    if path is None:
        yield None
        return
    try:
        file = open(path, "w", encoding="ascii")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise ConfigError(f"--hdr-log {path!r} cannot be written: {exc}") from None
    with file:
        yield file


def _run(config: LoadConfig, log: IO[str] | None, out: IO[str], err: IO[str]) -> int:
    thresholds = [_threshold.parse(spec) for spec in config.thresholds]
    usable = len(os.sched_getaffinity(0))
    parts = min(config.workers or usable, config.connections)
    raise_fd_limit(split(config.connections, parts, 0))
    logging.getLogger("prefork").setLevel(logging.WARNING)  # our lines, not the master's
    # SIGTERM stops, as SIGINT does: a drained load master would wait for nothing. A worker
    # whose loop a scenario blocks misses its heartbeats: killed (and said) soon after.
    master = Master(graceful_timeout=config.timeout + 5.0, sigterm="stop")
    broker = master.broker(
        "load",
        LoadWorker,
        workers=parts,
        load=config,
        parts=parts,
        timeout=config.timeout + HUNG_AFTER,
    )
    state = Run(parts)
    started = time.time() if config.start_at is None else config.start_at
    if log is not None:
        state.log = HdrLog(log, started)

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
    state.end_log()
    state.say_failures(err)
    doc = summary.document(
        state.total,
        duration=state.duration,
        config=config_json(config, parts),
        started=started,
        ended=time.time(),
        series=state.series,
        version=VERSION,
        # wrk's correction assumes a constant number of connections: not for a ramp of them.
        closed_loop=config.rate is None and not config.stages,
    )
    broken = _threshold.broken(thresholds, doc)
    if broken:
        doc["thresholds_broken"] = broken
    if config.json:
        print(json.dumps(doc), file=out)
    else:
        print(summary.text(doc, parts), file=out)
    for line in broken:
        print(f"prefork: threshold broken: {line}", file=err)
    if doc["answered"] - doc["errors"]["status"] == 0 and not state.failures:
        print("prefork: error: no request succeeded", file=err)
    return exit_code(doc, state.failures, broken, config.fail_on_error)

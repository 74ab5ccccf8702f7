"""What the master counts of its workers, as pure bookkeeping: the metric totals that follow
the actions it performs (starts, exits and crashes by cause, reloads and their durations),
what each worker last reported (its ``status`` and ``metrics``), the gauges read off a
status snapshot, and the master's own process and build. ``_console.py`` does the I/O around
it (sockets, ``/proc``, the log)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefork.core._events import Action, Emit, Spawn
from prefork.core._payloads import BrokerStatus, ReloadResult, WorkerExit, WorkerInfo
from prefork.ops._metrics import MetricStore

#: Bounds (seconds) of the reload duration histogram.
RELOAD_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
HELP = {
    "prefork_worker_starts_total": "Workers started.",
    "prefork_worker_exits_total": "Workers that left because the master asked, by cause.",
    "prefork_worker_crashes_total": "Workers that left unasked, by cause.",
    "prefork_reloads_total": "Rolling reloads finished, by result (done, failed).",
    "prefork_reload_duration_seconds": "How long rolling reloads took.",
    "prefork_workers": "Workers by state.",
    "prefork_workers_desired": "The desired number of workers.",
    "prefork_templates": "Templates (--template) by state, one per generation at most.",
    "prefork_reforks_total": "Reloads done onto a template a warmed worker forked "
    "(--refork-after).",
    "prefork_worker_resident_memory_bytes": "Resident memory of the live workers, summed.",
    "prefork_listen_queue": "Connections waiting in a TCP listener's accept queue.",
    "prefork_listen_queue_max": "The most connections a TCP listener's accept queue holds.",
    "prefork_build_info": "The prefork version and the Python it runs on (always 1).",
    # The master's own process, as prometheus_client's process collector names and tells it.
    "process_cpu_seconds_total": "Total user and system CPU time spent in seconds.",
    "process_resident_memory_bytes": "Resident memory size in bytes.",
    "process_virtual_memory_bytes": "Virtual memory size in bytes.",
    "process_open_fds": "Number of open file descriptors.",
    "process_max_fds": "Maximum number of open file descriptors.",
    "process_start_time_seconds": "Start time of the process since unix epoch in seconds.",
}
PROCESS_GAUGES = (
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
)
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """What the kernel tells of the master's own process (``_process.usage`` reads it)."""

    cpu_seconds: float  # user and system
    resident_bytes: int
    virtual_bytes: int
    open_fds: int
    max_fds: int  # the soft limit
    start_time: float  # unix time


class Accounts:
    """The master's metric store and what each worker last reported."""

    def __init__(self) -> None:
        self.metrics = MetricStore()
        self._reported: dict[int, tuple[int | None, int | None]] = {}  # requests, connections
        self._refusals: dict[int, str] = {}  # the last metric refusal told, per worker

    def observe(self, action: Action) -> str:
        """Count what the master does. Returns a line to log ("" for none): the first of a
        report's refused metrics, once per worker and reason, not once a second."""
        match action:
            case Spawn(broker=broker):
                self._inc("prefork_worker_starts_total", broker=broker)
            case Emit(event="worker_exit" | "worker_crash", args=(WorkerExit() as x,)):
                kind = "exits" if action.event == "worker_exit" else "crashes"
                self._inc(f"prefork_worker_{kind}_total", broker=x.type, cause=x.cause)
                self.metrics.forget(x.id)  # after its last report: the channel was read first
                self._reported.pop(x.id, None)
                self._refusals.pop(x.id, None)
            case Emit(event="reload_done" | "reload_failed", args=(ReloadResult() as r,)):
                result = "done" if action.event == "reload_done" else "failed"
                self._inc("prefork_reloads_total", broker=r.type, result=result)
                name = "prefork_reload_duration_seconds"
                self.metrics.observe(
                    name, {"broker": r.type}, r.duration, RELOAD_BUCKETS, HELP[name]
                )
            case Emit(event="worker_report", args=(body, WorkerInfo() as info)):
                return self._take_report(body, info)
        return ""

    def _inc(self, name: str, **labels: str) -> None:
        self.metrics.inc(name, labels, 1.0, HELP[name])

    def _take_report(self, body: Any, info: WorkerInfo) -> str:
        """A worker's report: its ``status`` and ``metrics`` (README, "Metrics")."""
        if not isinstance(body, dict):
            return ""
        status = body.get("status")
        if isinstance(status, dict):
            counts = (_count(status.get("requests")), _count(status.get("connections")))
            self._reported[info.id] = counts
        if "metrics" not in body:
            return ""
        refused = self.metrics.report(info.type, info.id, body["metrics"])
        if not refused or refused[0] == self._refusals.get(info.id):
            return ""
        self._refusals[info.id] = refused[0]
        return f"[{info.type}] worker {info.id} reported metrics the master refuses: {refused[0]}"

    def export(self) -> dict[str, Any]:
        """The metric totals and what each worker last reported, as plain data for the next
        image of the master (``adopt``)."""
        reported = [[worker, *counts] for worker, counts in self._reported.items()]
        return {"metrics": self.metrics.export(), "reported": reported}

    def adopt(self, doc: Mapping[str, Any]) -> None:
        """Take what ``export`` gave (``KeyError``, ``TypeError``, ``ValueError``: not that)."""
        self.metrics.adopt(doc["metrics"])
        self._reported = {
            int(worker): (_count(requests), _count(connections))
            for worker, requests, connections in doc["reported"]
        }

    def fill_reports(self, status: dict[str, BrokerStatus]) -> dict[str, BrokerStatus]:
        """``status`` with each worker's last reported requests and connections."""
        for broker in status.values():
            for row in broker["workers"]:
                row["requests"], row["connections"] = self._reported.get(row["id"], (None, None))
        return status

    def read_gauges(
        self, status: Mapping[str, BrokerStatus], queues: Mapping[Labels, tuple[int, int]]
    ) -> None:
        """Set the gauges of a scrape from a (filled) status and the listeners' accept queues
        (by their ``address`` and ``broker`` labels): workers by state, desired, memory, templates
        by state; and the reforks of a broker that reforks (a counter, read off the status)."""
        workers: dict[Labels, float] = {}
        desired: dict[Labels, float] = {}
        memory: dict[Labels, float] = {}
        templates: dict[Labels, float] = {}
        for name, broker in status.items():
            key = (("broker", name),)
            desired[key] = float(broker["desired"])
            memory[key] = 0.0
            for row in broker["workers"]:
                state = (("broker", name), ("state", row["state"]))
                workers[state] = workers.get(state, 0.0) + 1
                memory[key] += row["rss"] or 0
            for template in broker["templates"]:
                state = (("broker", name), ("state", template["state"]))
                templates[state] = templates.get(state, 0.0) + 1
            reforks = broker.get("reforks")
            if reforks is not None and (reforks["next_after"] is not None or reforks["count"]):
                family = "prefork_reforks_total"
                count = float(reforks["count"])
                self.metrics.set_counter(family, {"broker": name}, count, HELP[family])
        for family, values in (
            ("prefork_workers", workers),
            ("prefork_workers_desired", desired),
            ("prefork_templates", templates),
            ("prefork_worker_resident_memory_bytes", memory),
            ("prefork_listen_queue", {k: float(q[0]) for k, q in queues.items()}),
            ("prefork_listen_queue_max", {k: float(q[1]) for k, q in queues.items()}),
        ):
            self.metrics.set_gauges(family, HELP[family], values)

    def read_build(self, version: str, python: str) -> None:
        """Set ``prefork_build_info{python,version} 1``."""
        info: dict[Labels, float] = {(("python", python), ("version", version)): 1.0}
        self.metrics.set_gauges("prefork_build_info", HELP["prefork_build_info"], info)

    def read_process(self, usage: ProcessUsage | None) -> None:
        """Set the ``process_*`` metrics from a reading of the master's own process. None (no
        ``/proc``: not Linux) leaves the gauges out, and the CPU counter as it was."""
        gauges: dict[str, float] = {}
        if usage is not None:
            name = "process_cpu_seconds_total"
            self.metrics.set_counter(name, {}, usage.cpu_seconds, HELP[name])
            gauges = {
                "process_resident_memory_bytes": usage.resident_bytes,
                "process_virtual_memory_bytes": usage.virtual_bytes,
                "process_open_fds": usage.open_fds,
                "process_max_fds": usage.max_fds,
                "process_start_time_seconds": usage.start_time,
            }
        for name in PROCESS_GAUGES:
            values: dict[Labels, float] = {(): gauges[name]} if name in gauges else {}
            self.metrics.set_gauges(name, HELP[name], values)


def _count(value: Any) -> int | None:
    """A reported count: a whole number >= 0, else unknown."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None

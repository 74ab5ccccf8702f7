"""The master's console, in one process: what it counts from the actions the master performs,
what it takes from workers' reports, the status it fills in, the control socket's commands,
and where its sockets go."""

from __future__ import annotations

import json
import os
import platform
import selectors
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_control import client, pump, read_line

import prefork
from prefork.config import MasterConfig
from prefork.core._events import (
    DrainRequested,
    Emit,
    Event,
    Log,
    ReloadRequested,
    ScaleRequested,
    Spawn,
    StopRequested,
)
from prefork.core._options import ConfigError
from prefork.core._payloads import BrokerStatus, ReloadResult, WorkerExit, WorkerInfo
from prefork.master import _process, _sockets
from prefork.ops import _control_path
from prefork.ops._accounts import ProcessUsage
from prefork.ops._console import Console, Host


def worker_row(worker_id: int, state: str = "ready") -> dict[str, Any]:
    return {
        "id": worker_id,
        "pid": 100 + worker_id,
        "generation": 1,
        "state": state,
        "uptime": 5.0,
        "requests": None,
        "connections": None,
        "rss": None,
    }


def host(**readers: Any) -> Host:
    """The console's view of the OS as the master gives it, ``readers`` replaced."""
    real = {
        "bind": _sockets.bind,
        "bind_private": _sockets.bind_private,
        "describe": _sockets.describe,
        "listen_queue": _sockets.listen_queue,
        "rss": _process.rss,
        "usage": _process.usage,
    }
    return Host(**{**real, **readers})


class FakeMaster:
    """What the console reads of the master: a status, and the events it posts."""

    def __init__(self) -> None:
        self.posted: list[Event] = []
        self.generation = 1
        self.last: dict[str, Any] | None = None
        self.draining = False
        self.templates: list[dict[str, Any]] = []
        self.reforks: dict[str, Any] | None = None

    def status(self, now: float) -> dict[str, BrokerStatus]:
        broker = {
            "desired": 2,
            "live": 2,
            "generation": self.generation,
            "draining": self.draining,
            "reloading": False,
            "failures": 0,
            "backoff_until": 0.0,
            "backoff": 0.0,
            "started": 2,
            "restarts": 0,
            "crashes": 0,
            "last_reload": self.last,
            "workers": [worker_row(1), worker_row(2, "booting")],
            "templates": self.templates,
        }
        if self.reforks is not None:
            broker["reforks"] = self.reforks
        return {"http": broker}  # type: ignore[dict-item]


@pytest.fixture
def selector() -> Iterator[selectors.DefaultSelector]:
    with selectors.DefaultSelector() as sel:
        yield sel


def console(
    tmp_path: Path, selector: selectors.BaseSelector, **options: Any
) -> tuple[Console, FakeMaster]:
    master = FakeMaster()
    config = MasterConfig(**{"control": str(tmp_path / "m.ctl"), **options})
    made = Console(config, master.posted.append, host())
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    unix = socket.socket(socket.AF_UNIX)  # no accept queue the kernel tells of
    unix.bind(str(tmp_path / "web.sock"))
    unix.listen(8)
    made.open(selector, master.status, {"http": [listener, unix]})
    return made, master


def request(sel: selectors.BaseSelector, sock: socket.socket, **fields: Any) -> dict[str, Any]:
    sock.sendall(json.dumps({"v": 1, **fields}).encode() + b"\n")
    return read_line(sel, sock)


def test_status_is_the_masters_with_the_workers_reports_and_memory(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    made, master = console(tmp_path, selector)
    made.observe(
        Emit(
            "http",
            "worker_report",
            ({"status": {"requests": 7, "connections": 2}}, WorkerInfo(1, 101, "http", 1)),
        )
    )
    master.templates = [
        {"generation": 1, "state": "ready", "pid": None, "uptime": 1.0},
        {"generation": 2, "state": "starting", "pid": None, "uptime": 0.0},
    ]
    standbys = made.fill(master.status(0.0), {}, {}, {("http", 1): 4250})["http"]["templates"]
    assert [t["standby"] for t in standbys] == [4250, None]
    filled = made.fill(master.status(0.0), {1: os.getpid()}, {("http", 1): 4242})
    assert [t["pid"] for t in filled["http"]["templates"]] == [4242, None]
    assert [t["standby"] for t in filled["http"]["templates"]] == [None, None]
    first, second = filled["http"]["workers"]
    assert (first["requests"], first["connections"]) == (7, 2)
    assert first["rss"] is not None and first["rss"] > 1 << 20  # this process's memory
    assert (second["requests"], second["connections"], second["rss"]) == (None, None, None)
    # a report of nonsense counts leaves them unknown
    made.observe(
        Emit(
            "http",
            "worker_report",
            ({"status": {"requests": -1, "connections": "x"}}, WorkerInfo(1, 101, "http", 1)),
        )
    )
    made.observe(Emit("http", "worker_report", ("not a dict", WorkerInfo(1, 101, "http", 1))))
    first = made.fill(master.status(0.0), {}, {})["http"]["workers"][0]
    assert (first["requests"], first["connections"]) == (None, None)
    made.close()


def test_the_control_socket_answers_status_and_posts_commands(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    made, master = console(tmp_path, selector)
    sock = client(tmp_path / "m.ctl")
    reply = request(selector, sock, cmd="status")
    status = reply["status"]
    assert status["pid"] == os.getpid() and status["control"] == str(tmp_path / "m.ctl")
    assert status["metrics"] is None
    assert "backoff_until" not in status["brokers"]["http"]
    assert status["brokers"]["http"]["workers"][1]["state"] == "booting"
    for cmd, extra, event in [
        ("drain", {"broker": "http"}, DrainRequested("http")),
        ("scale", {"broker": "http", "workers": 4}, ScaleRequested("http", workers=4)),
        ("reload", {}, ReloadRequested(None)),
        ("stop", {}, StopRequested()),
    ]:
        assert request(selector, sock, cmd=cmd, **extra) == {"v": 1, "ok": True}
        assert master.posted[-1] == event
    made.close()


def test_reload_wait_is_answered_when_the_reload_finishes(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    made, master = console(tmp_path, selector)
    sock = client(tmp_path / "m.ctl")
    sock.sendall(b'{"v":1,"cmd":"reload","broker":"http","wait":true}\n')
    pump(selector)
    assert master.posted == [ReloadRequested("http")]
    master.generation = 2
    master.last = {
        "generation": 2,
        "result": "running",
        "reason": "",
        "replaced": 0,
        "duration": 0.1,
        "ago": 0.1,
    }
    made.settle()
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(100)  # not yet
    master.last = {**master.last, "result": "done", "replaced": 2, "duration": 1.5}
    made.settle()
    sock.settimeout(2)
    reply = read_line(selector, sock)
    assert reply["ok"] is True and reply["reloads"][0]["replaced"] == 2
    made.close()


def test_metrics_count_starts_exits_crashes_reloads_and_reports(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    made, master = console(tmp_path, selector, metrics_bind="127.0.0.1:0")
    master.templates = [
        {"generation": 1, "state": "ready", "pid": None, "uptime": 1.0},
        {"generation": 2, "state": "starting", "pid": None, "uptime": 0.0},
    ]
    info = WorkerInfo(1, 101, "http", 1)
    made.observe(Spawn(1, "http", 1))
    made.observe(Spawn(2, "http", 1))
    made.observe(
        Emit("http", "worker_exit", (WorkerExit(1, 101, "http", 1, 0, None, 3.0, "replaced"),))
    )
    made.observe(
        Emit("http", "worker_crash", (WorkerExit(2, 102, "http", 1, None, 9, 3.0, "signal"),))
    )
    made.observe(Emit("http", "reload_done", (ReloadResult("http", 2, 2, "", 1.7),)))
    made.observe(Emit("http", "reload_failed", (ReloadResult("http", 3, 0, "boom", 0.2),)))
    sample = {
        "name": "prefork_http_requests_total",
        "type": "counter",
        "value": 5,
        "labels": {"method": "GET", "status": "2xx"},
    }
    made.observe(Emit("http", "worker_report", ({"metrics": [sample]}, info)))
    made.observe(Log(20, "not counted"))
    text = "".join(made.render_metrics())
    assert 'prefork_worker_starts_total{broker="http"} 2' in text
    assert 'prefork_worker_exits_total{broker="http",cause="replaced"} 1' in text
    assert 'prefork_worker_crashes_total{broker="http",cause="signal"} 1' in text
    assert 'prefork_reloads_total{broker="http",result="done"} 1' in text
    assert 'prefork_reloads_total{broker="http",result="failed"} 1' in text
    assert 'prefork_reload_duration_seconds_bucket{broker="http",le="2.5"} 2' in text
    assert 'prefork_http_requests_total{broker="http",method="GET",status="2xx"} 5' in text
    assert 'prefork_workers{broker="http",state="booting"} 1' in text
    assert 'prefork_workers_desired{broker="http"} 2' in text
    assert 'prefork_templates{broker="http",state="ready"} 1' in text
    assert 'prefork_templates{broker="http",state="starting"} 1' in text
    assert "prefork_reforks_total" not in text  # the broker does not refork
    master.reforks = {"count": 0, "ago": None, "next_after": 50}
    assert 'prefork_reforks_total{broker="http"} 0' in "".join(made.render_metrics())
    master.reforks = {"count": 2, "ago": 1.0, "next_after": None}
    assert 'prefork_reforks_total{broker="http"} 2' in "".join(made.render_metrics())
    master.reforks = {"count": 0, "ago": None, "next_after": None}
    assert 'prefork_worker_resident_memory_bytes{broker="http"} 0' in text
    assert 'prefork_listen_queue_max{address="127.0.0.1:' in text
    assert made.snapshot()["metrics"].startswith("http://127.0.0.1:")
    assert made.describe().startswith(f"control {tmp_path / 'm.ctl'}; metrics http://127.0.0.1:")
    made.close()


def test_metrics_tell_the_masters_own_process_and_its_build() -> None:
    readings = [ProcessUsage(1.25, 30 << 20, 200 << 20, 9, 1024, 1700000000.53), None]
    made = Console(MasterConfig(), lambda event: None, host(usage=lambda: readings.pop(0)))
    text = "".join(made.render_metrics())
    assert (
        "# HELP prefork_build_info The prefork version and the Python it runs on (always 1).\n"
        "# TYPE prefork_build_info gauge\n"
        f'prefork_build_info{{python="{platform.python_version()}",'
        f'version="{prefork.__version__}"}} 1\n'
    ) in text
    cpu = [
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
        "# TYPE process_cpu_seconds_total counter",
        "process_cpu_seconds_total 1.25",
    ]
    assert process_lines(text) == [
        *cpu,
        "# HELP process_max_fds Maximum number of open file descriptors.",
        "# TYPE process_max_fds gauge",
        "process_max_fds 1024",
        "# HELP process_open_fds Number of open file descriptors.",
        "# TYPE process_open_fds gauge",
        "process_open_fds 9",
        "# HELP process_resident_memory_bytes Resident memory size in bytes.",
        "# TYPE process_resident_memory_bytes gauge",
        "process_resident_memory_bytes 31457280",
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
        "# TYPE process_start_time_seconds gauge",
        "process_start_time_seconds 1700000000.53",
        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.",
        "# TYPE process_virtual_memory_bytes gauge",
        "process_virtual_memory_bytes 209715200",
    ]
    # /proc unreadable now: what it told is gone, but a counter keeps its total
    assert process_lines("".join(made.render_metrics())) == cpu


def test_without_proc_the_process_metrics_are_left_out() -> None:
    made = Console(MasterConfig(), lambda event: None, host(usage=lambda: None))  # not Linux
    text = "".join(made.render_metrics())
    assert process_lines(text) == [] and "prefork_build_info{" in text


def process_lines(text: str) -> list[str]:
    heads = ("process_", "# HELP process_", "# TYPE process_")
    return [line for line in text.splitlines() if line.startswith(heads)]


def test_a_refused_metric_is_logged_once_per_worker(
    tmp_path: Path, selector: selectors.DefaultSelector, caplog: pytest.LogCaptureFixture
) -> None:
    made, _ = console(tmp_path, selector)
    info = WorkerInfo(1, 101, "http", 1)
    bad = {"metrics": [{"name": "bad name", "type": "counter", "value": 1}]}
    for _ in range(3):
        made.observe(Emit("http", "worker_report", (bad, info)))
    refusals = [r for r in caplog.records if "refuses" in r.getMessage()]
    assert len(refusals) == 1
    assert (
        refusals[0].getMessage().startswith("[http] worker 1 reported metrics the master refuses: ")
    )
    made.close()


def test_no_control_no_metrics_nothing_bound(selector: selectors.DefaultSelector) -> None:
    made = Console(MasterConfig(), lambda event: None, host())
    made.open(selector, FakeMaster().status, {})
    assert made.describe() == "" and made.fds() == [] and made.deadline() is None
    made.settle()
    made.expire(0.0)
    made.close()


def test_auto_puts_the_socket_in_a_private_runtime_dir(
    tmp_path: Path, selector: selectors.DefaultSelector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    made = Console(MasterConfig(control="auto"), lambda event: None, host())
    made.open(selector, FakeMaster().status, {})
    expected = _control_path.default_path(None, os.environ, os.getuid(), os.getpid())
    assert made.control_path == expected and os.path.exists(expected)
    assert oct(os.stat(os.path.dirname(expected)).st_mode & 0o777) == "0o700"
    made.close()
    assert not os.path.exists(expected)


def test_deadlines_come_from_the_servers(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    made, _ = console(tmp_path, selector)
    sock = client(tmp_path / "m.ctl")
    pump(selector)
    deadline = made.deadline()
    assert deadline is not None and len(made.fds()) == 2
    made.expire(deadline)
    assert made.deadline() is None
    sock.close()
    made.close()


def test_a_socket_that_cannot_be_bound_is_named_in_the_error(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    missing = tmp_path / "no" / "such" / "dir.ctl"
    made = Console(MasterConfig(control=str(missing)), lambda event: None, host())
    with pytest.raises(ConfigError, match=r"^the control socket: cannot bind 'unix:"):
        made.open(selector, FakeMaster().status, {})
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    made = Console(MasterConfig(metrics_bind=f"127.0.0.1:{port}"), lambda event: None, host())
    with pytest.raises(
        ConfigError, match=r"^the metrics endpoint: cannot bind '127.0.0.1:\d+': address"
    ):
        made.open(selector, FakeMaster().status, {})
    taken.close()

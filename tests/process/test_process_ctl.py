"""`prefork ctl` against real masters: status, reloads that succeed and fail, scaling, a drain of
one broker while another serves, the metrics endpoint counting across a reload and a crash,
memory recycling, process titles, and a control socket nobody else may use.

Masters run in their own sessions and are stopped by the ``start`` fixture whatever happens;
conditions are polled against deadlines.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, MasterProcess, ask, listener, wait_until
from test_serve import Start, ready_logged, serve

import prefork

pytestmark = pytest.mark.timeout(60)


def ctl(
    path: Path | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    where = ["--control", str(path)] if path is not None else []
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "prefork", "ctl", *where, *args],
        capture_output=True,
        text=True,
        timeout=45,
        env=environ,
    )


def status(path: Path) -> dict[str, Any]:
    done = ctl(path, "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def get(port: int, path: str = "/") -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("content-type", "").startswith("text/plain; version=0.0.4")
        return response.read().decode()
    finally:
        conn.close()


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match[3])
    return total


def ops(
    start: Start, tmp_path: Path, *options: str, workers: int = 2, env: dict[str, str] | None = None
) -> tuple[MasterProcess, int, Path]:
    """``prefork serve ops_app:app`` with a control socket in ``tmp_path``; returns the master,
    its port and the socket's path, once its workers are ready."""
    sock = listener()
    port = sock.getsockname()[1]
    path = tmp_path / "m.ctl"
    master = serve(
        start, sock, "--control", str(path), *options, app="ops_app:app", workers=workers, env=env
    )
    wait_until(lambda: len(ready_logged(master)) >= workers, 10, "workers ready")
    return master, port, path


def pids(doc: dict[str, Any], broker: str = "http") -> set[int]:
    return {w["pid"] for w in doc["brokers"][broker]["workers"]}


def test_status_lists_every_worker_and_what_it_served(start: Start, tmp_path: Path) -> None:
    master, port, path = ops(start, tmp_path)
    for _ in range(6):
        get(port)

    def served() -> dict[str, Any] | None:
        doc = status(path)
        rows = doc["brokers"]["http"]["workers"]
        return doc if sum(w["requests"] or 0 for w in rows) == 6 else None

    doc = wait_until(served, 10, "6 requests reported")
    assert doc["pid"] == master.pid and doc["control"] == str(path) and doc["metrics"] is None
    http_ = doc["brokers"]["http"]
    assert pids(doc) == master.workers()
    assert (http_["desired"], http_["live"], http_["generation"]) == (2, 2, 1)
    assert (http_["started"], http_["restarts"], http_["crashes"]) == (2, 0, 0)
    assert http_["last_reload"] is None
    for row in http_["workers"]:
        assert row["state"] == "ready" and row["connections"] == 0
        assert row["rss"] > 5 << 20 and row["uptime"] > 0
    table = ctl(path, "status")
    assert table.returncode == 0
    for pid in master.workers():
        assert re.search(rf"\b{pid}\s+1\s+ready\b", table.stdout), table.stdout


def test_status_during_a_reload_then_reload_wait(start: Start, tmp_path: Path) -> None:
    delay, gate = tmp_path / "delay", tmp_path / "gate"
    env = {"OPS_BOOT_DELAY": str(delay), "OPS_BOOT_GATE": str(gate)}
    master, port, path = ops(start, tmp_path, env=env)
    old = master.workers()
    gate.touch()  # replacements wait until it goes: the reload is still running when looked at
    assert ctl(path, "reload").returncode == 0  # returns at once

    def reloading() -> dict[str, Any] | None:
        doc = status(path)
        return doc if doc["brokers"]["http"]["reloading"] else None

    doc = wait_until(reloading, 10, "the reload seen running")["brokers"]["http"]
    assert doc["last_reload"]["result"] == "running" and doc["last_reload"]["generation"] == 2
    assert "booting" in {w["state"] for w in doc["workers"]}
    assert doc["live"] == 3  # the replacement boots beside the two old ones (N+1)
    table = ctl(path, "status").stdout
    assert "reloading" in table and "booting" in table
    delay.write_text("1.0")  # from now on, replacements take a second to boot
    gate.unlink()
    done = ctl(path, "reload", "--wait")  # a newer reload: it supersedes the running one
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"reload done: http generation 3, 2 worker\(s\) replaced in \S+\n", done.stdout
    )
    doc = status(path)["brokers"]["http"]
    assert doc["last_reload"]["result"] == "done" and doc["last_reload"]["duration"] >= 1.0
    assert {w["generation"] for w in doc["workers"] if w["state"] == "ready"} == {3}
    wait_until(lambda: not master.workers() & old, 10, "old workers gone")
    get(port)


def test_reload_wait_onto_broken_code_exits_1_and_the_old_workers_serve(
    start: Start, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    # (--template off: a worker fails, not a template: test_serve_templates.py has that)
    master, port, path = ops(start, tmp_path, "--template", "off", env={"OPS_BROKEN": str(broken)})
    old = master.workers()
    broken.touch()
    done = ctl(path, "reload", "--wait")
    assert done.returncode == 1
    assert done.stderr.startswith("prefork: error: the reload of http was rolled back: worker ")
    assert done.stderr.endswith(  # the cause: the line of the error that names it
        " could not start before it was ready: RuntimeError: ops_app: broken on purpose at import\n"
    )
    assert len(done.stderr.splitlines()) == 1
    assert old <= master.workers()
    assert int(get(port)) in old
    last = status(path)["brokers"]["http"]["last_reload"]
    assert last["result"] == "failed" and "before it was ready" in last["reason"]


def test_scale_up_and_down(start: Start, tmp_path: Path) -> None:
    master, _, path = ops(start, tmp_path)
    done = ctl(path, "scale", "http", "3")
    assert done.returncode == 0, done.stderr
    master.wait_workers(3, 10)
    assert ctl(path, "scale", "http", "1").returncode == 0
    master.wait_workers(1, 10)
    doc = status(path)["brokers"]["http"]
    assert doc["desired"] == 1
    refused = ctl(path, "scale", "web", "2")
    assert refused.returncode == 1
    assert refused.stderr == "prefork: error: no broker named 'web'; brokers: http\n"


def test_drain_and_resume_one_broker_while_another_keeps_working(
    start: Start, tmp_path: Path
) -> None:
    sock = listener()
    port = sock.getsockname()[1]
    path = tmp_path / "api.ctl"
    config = {
        "master": {"control": str(path)},
        "brokers": [
            {
                "type": "web",
                "worker": "workers:Echo",
                "workers": 2,
                "listen": [f"fd://{sock.fileno()}"],
            },
            {"type": "jobs", "worker": "workers:Jobs", "workers": 1, "interval": 0.05},
        ],
    }
    master = start(config, pass_fds=[sock])
    master.wait_ready(3, timeout=10)
    assert ctl(path, "drain", "web").returncode == 0
    wait_until(lambda: not master.ready_pids("web"), 10, "web drained")
    doc = status(path)["brokers"]
    assert doc["web"]["draining"] and doc["web"]["live"] == 0
    assert not doc["jobs"]["draining"] and doc["jobs"]["live"] == 1
    progress = len(master.events("worker_message"))
    wait_until(lambda: len(master.events("worker_message")) > progress + 3, 5, "jobs still working")
    assert ctl(path, "resume", "web").returncode == 0
    master.wait_ready(2, "web", timeout=10)
    assert ask(port).startswith("pong ")


def test_metrics_keep_counting_across_a_reload_and_a_crash(start: Start, tmp_path: Path) -> None:
    mport = free_port()
    master, port, path = ops(start, tmp_path, "--metrics-bind", f"127.0.0.1:{mport}")
    assert status(path)["metrics"] == f"http://127.0.0.1:{mport}/metrics"

    def counted(n: int) -> str | None:
        text = scrape(mport)
        return text if sample(text, "prefork_http_requests_total", status="2xx") == n else None

    for _ in range(10):
        get(port)
    wait_until(lambda: counted(10), 10, "10 requests counted")
    assert ctl(path, "reload", "--wait").returncode == 0
    for _ in range(10):
        get(port)
    wait_until(lambda: counted(20), 10, "20 requests counted across the reload")
    victim = int(get(port))
    wait_until(lambda: counted(21), 10, "the victim's request counted")
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: victim not in master.workers() and len(master.workers()) == 2, 10, "replaced"
    )
    for _ in range(10):
        get(port)
    text = wait_until(lambda: counted(31), 10, "31 requests counted across the crash")
    assert sample(text, "prefork_worker_crashes_total", broker="http", cause="signal") == 1
    assert sample(text, "prefork_worker_exits_total", broker="http", cause="replaced") == 2
    assert sample(text, "prefork_reloads_total", result="done") == 1
    assert sample(text, "prefork_worker_starts_total") == 5
    assert sample(text, "prefork_http_request_duration_seconds_count") == 31
    assert sample(text, "prefork_workers", state="ready") == 2
    assert sample(text, "prefork_listen_queue_max") == 2048


def test_the_master_tells_its_own_process_and_build(start: Start, tmp_path: Path) -> None:
    began = time.time()
    mport = free_port()
    master, _, _ = ops(start, tmp_path, "--metrics-bind", f"127.0.0.1:{mport}", workers=1)
    text = scrape(mport)
    proc = Path(f"/proc/{master.pid}")
    rss = int((proc / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    limits = (proc / "limits").read_text()
    soft = re.search(r"^Max open files +(\d+)", limits, re.M)
    assert soft is not None
    assert "# TYPE process_cpu_seconds_total counter" in text
    assert 0 < sample(text, "process_cpu_seconds_total") < 60
    assert abs(sample(text, "process_resident_memory_bytes") - rss) < 8 << 20  # the master's
    assert sample(text, "process_virtual_memory_bytes") > rss
    assert 5 < sample(text, "process_open_fds") < int(soft[1]) == sample(text, "process_max_fds")
    # the boot time the kernel gives is in whole seconds
    assert began - 1 <= sample(text, "process_start_time_seconds") <= time.time()
    python, version = platform.python_version(), prefork.__version__
    assert f'prefork_build_info{{python="{python}",version="{version}"}} 1\n' in text


def test_ctl_with_no_master_says_so_in_one_line(tmp_path: Path) -> None:
    missing = ctl(tmp_path / "none.ctl", "status")
    assert missing.returncode == 2
    assert missing.stderr.startswith(
        f"prefork: error: no control socket at {tmp_path / 'none.ctl'}"
    )
    stale = tmp_path / "stale.ctl"
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(stale))
    left.close()  # a master that died: the file stays, nothing listens
    done = ctl(stale, "status")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "stale" in done.stderr


def connect_as(uid: int, path: Path) -> str:
    """Connect to ``path`` as ``uid`` from a forked child; what happened, in a word or the
    master's answer."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a forked copy of the test: it reports through the pipe
        os.close(read)
        try:
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(path))
                # A refused peer may be closed before it writes (the refusal is already in
                # its buffer): a failed send is no answer, the read says what came back.
                with contextlib.suppress(OSError):
                    s.sendall(b'{"v":1,"cmd":"status"}\n')
                result = s.recv(4096).decode()
        except PermissionError:
            result = "permission denied"
        except Exception as exc:
            result = repr(exc)
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as f:
        return f.read()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_the_control_socket_refuses_another_user(start: Start) -> None:
    # A directory any user may reach (pytest's tmp_path is under a 0700 one): the socket's own
    # mode, then the master's check of the peer, must keep them out.
    shared = Path(tempfile.mkdtemp(prefix="prefork-ctl-"))
    shared.chmod(0o755)
    try:
        _refuses_another_user(start, shared)
    finally:
        shutil.rmtree(shared)


def _refuses_another_user(start: Start, shared: Path) -> None:
    _, _, path = ops(start, shared)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert connect_as(65534, path) == "permission denied"
    path.chmod(0o666)  # opened up by mistake: the master still checks who connects
    answer = json.loads(connect_as(65534, path))
    assert answer == {
        "v": 1,
        "ok": False,
        "error": "refused: uid 65534 may not control this master (its user's and root's only)",
    }
    assert json.loads(connect_as(0, path))["ok"] is True


def test_process_titles_tell_master_and_workers_apart(start: Start, tmp_path: Path) -> None:
    master, _, _ = ops(start, tmp_path)

    def cmdline(pid: int) -> str:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()

    def comm(pid: int) -> str:
        return Path(f"/proc/{pid}/comm").read_text().strip()

    assert cmdline(master.pid) == "prefork: master [ops_app:app]"
    assert comm(master.pid) == "prefork: master"
    titles = sorted(cmdline(pid) for pid in master.workers())
    assert titles == ["prefork: http worker 1 gen 1", "prefork: http worker 2 gen 1"]
    assert {comm(pid) for pid in master.workers()} == {"prefork:http"}


def test_a_worker_over_its_memory_limit_is_replaced_without_a_gap(
    start: Start, tmp_path: Path
) -> None:
    master, port, path = ops(start, tmp_path, "--max-worker-memory", "80", workers=1)
    (old,) = master.workers()
    assert int(get(port, "/grow?mb=100")) == old  # now over 80 MiB
    new = wait_until(lambda: master.workers() - {old}, 15, "a replacement")
    wait_until(lambda: old not in master.workers(), 15, "the old worker gone")
    assert int(get(port)) in new
    assert re.search(
        rf"worker 1 \(pid {old}\) uses \d+ MiB, over max_worker_memory \(80 MiB\)", master.stderr()
    )
    assert status(path)["brokers"]["http"]["restarts"] == 1


def test_the_default_socket_is_beside_the_pid_file_or_in_the_runtime_dir(
    start: Start, tmp_path: Path
) -> None:
    tmp_path.chmod(0o755)  # as /run is: the socket's own mode keeps others out
    pidfile = tmp_path / "app.pid"
    sock = listener()
    master = serve(start, sock, "--pid", str(pidfile), app="ops_app:app", workers=1)
    wait_until(lambda: (tmp_path / "app.ctl").exists(), 10, "the socket beside the pid file")
    assert oct((tmp_path / "app.ctl").stat().st_mode & 0o777) == "0o600"
    done = ctl(None, "--pid", str(pidfile), "status", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["pid"] == master.pid
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    other = serve(start, listener(), app="ops_app:app", workers=1, env=env)
    wait_until(lambda: (runtime / "prefork" / f"{other.pid}.ctl").exists(), 10, "runtime socket")
    done = ctl(None, "status", "--json", env=env)
    assert done.returncode == 0 and json.loads(done.stdout)["pid"] == other.pid


def test_an_idle_metrics_client_is_closed_and_the_master_carries_on(
    start: Start, tmp_path: Path
) -> None:
    mport = free_port()
    _, port, path = ops(start, tmp_path, "--metrics-bind", f"127.0.0.1:{mport}")
    idle = socket.create_connection(("127.0.0.1", mport))
    idle.sendall(b"GET /metr")  # and nothing more: a slowloris
    assert "prefork_workers" in scrape(mport)  # others are served meanwhile
    assert get(port)
    idle.settimeout(10)
    assert idle.recv(100) == b""  # closed at its idle deadline (5 s)
    idle.close()
    assert status(path)["brokers"]["http"]["live"] == 2


def test_a_workers_own_metrics_outlive_it(start: Start, tmp_path: Path) -> None:
    """A user's worker reports a counter and a gauge; the counter's total survives the worker
    being replaced, the gauge goes with it; ctl shows no request counts for it."""
    sock = listener()
    port = sock.getsockname()[1]
    mport = free_port()
    path = tmp_path / "api.ctl"
    config = {
        "master": {"control": str(path), "metrics_bind": f"127.0.0.1:{mport}"},
        "brokers": [
            {
                "type": "echo",
                "worker": "workers:Echo",
                "workers": 1,
                "listen": [f"fd://{sock.fileno()}"],
            }
        ],
    }
    master = start(config, pass_fds=[sock])
    (first,) = master.wait_ready(1, timeout=10)
    report = {
        "metrics": [
            {"name": "jobs_total", "type": "counter", "value": 3, "help": "Jobs done."},
            {"name": "queue_depth", "type": "gauge", "value": 7},
            {"name": "bad name", "type": "counter", "value": 1},
        ]
    }
    assert ask(port, "report " + json.dumps(report)).startswith("ok ")

    def reported() -> str | None:
        text = scrape(mport)
        return text if "jobs_total" in text else None

    text = wait_until(reported, 10, "the report scraped")
    assert sample(text, "jobs_total", broker="echo") == 3
    assert sample(text, "queue_depth", broker="echo") == 7
    assert "# HELP jobs_total Jobs done.\n" in text
    assert (
        "reported metrics the master refuses: metric 'bad name' has a bad name" in master.stderr()
    )
    row = status(path)["brokers"]["echo"]["workers"][0]
    assert (row["requests"], row["connections"]) == (None, None)
    assert ask(port, "retire").startswith("ok ")  # replaced through the rolling path
    master.wait_event("worker_exit", pid=first, timeout=10)
    second = master.wait_ready(1, timeout=10)
    assert second != {first}
    report = {"metrics": [{"name": "jobs_total", "type": "counter", "value": 2}]}
    assert ask(port, "report " + json.dumps(report)).startswith("ok ")

    def counted() -> str | None:
        text = scrape(mport)
        return text if sample(text, "jobs_total") == 5 else None

    text = wait_until(counted, 10, "the total across both workers")
    assert sample(text, "queue_depth") == 0  # the first worker's gauge left with it

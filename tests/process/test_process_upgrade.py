"""`prefork ctl upgrade` against real masters: the master re-executes itself in place (same
pid, same sockets, its workers carried across, then rolled onto the new code) without failing
a request; refusals that leave everything as it was (broken code on disk, a reload or a drain
running, an upgrade under way, a check that hangs or floods, a master not started by prefork
serve); signals and a worker's exit inside the exec window, handled by the new image; peers
of the control socket and the metrics endpoint kept across; and a ``PREFORK_UPGRADE`` that
is not an upgrade's, refused in one line.

The moments inside an upgrade that a test cannot reach from outside (the exec window, the
check) are reached through ``upgrade_hooks/sitecustomize.py``, steered by files.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, listener, wait_until
from test_process_ctl import ctl, get, ops, pids, sample, status
from test_serve import SERVE_APPS, Start, wait_log

from prefork.core._handover import FORMAT

pytestmark = pytest.mark.timeout(90)
HOOKS = Path(__file__).parent / "upgrade_hooks"
J = ["--json"]


def hooked(tmp_path: Path, **files: str) -> dict[str, str]:
    """The environment of a master whose upgrades run the hooks, and those hooks' files."""
    where = tmp_path / "hooks"
    where.mkdir(exist_ok=True)
    for name, text in files.items():
        (where / name).write_text(text)
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), str(HOOKS)]), "UPGRADE_HOOKS": str(where)}


class Load:
    """Requests one after another on new connections from a thread, until stopped: how many
    were answered 200 and what went wrong with the others."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"status {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.failed.append(repr(exc))
            finally:
                conn.close()

    def __enter__(self) -> Load:
        self._thread.start()
        wait_until(lambda: self.ok >= 5, 10, "the load answered")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def upgraded(path: Path, before: dict[str, Any]) -> dict[str, Any]:
    """The status once the upgrade's reload has replaced every worker of ``before``."""

    def done() -> dict[str, Any] | None:
        doc = status(path)
        http_ = doc["brokers"]["http"]
        states = [w["state"] for w in http_["workers"]]
        fresh = not pids(doc) & pids(before) and states == ["ready", "ready"]
        return doc if fresh else None

    return wait_until(done, 20, "every worker replaced")


def test_upgrade_keeps_the_pid_and_replaces_every_worker_without_failing_a_request(
    start: Start, tmp_path: Path
) -> None:
    pidfile = tmp_path / "m.pid"
    master, port, path = ops(start, tmp_path, "--pid", str(pidfile))
    before = status(path)
    assert before["upgrades"] == 0 and before["started"] == before["master_started"]
    with Load(port) as running:
        done = ctl(path, "upgrade", "--wait")
        doc = upgraded(path, before)
        served = running.ok
        wait_until(lambda: running.ok > served + 5, 10, "requests answered after the upgrade")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"upgraded in place: master {master.pid} runs prefork ")
    assert ", upgrade 1, re-executed in " in lines[0]
    assert lines[1].startswith("reload done: http generation 2, 2 worker(s) replaced in ")
    assert running.failed == []
    assert doc["pid"] == master.pid and doc["upgrades"] == 1 and doc["version"]
    assert doc["master_started"] == before["master_started"]
    assert doc["started"] > before["started"]
    assert doc["uptime"] >= before["uptime"]  # the master's, not this image's
    assert {w["generation"] for w in doc["brokers"]["http"]["workers"]} == {2}
    assert pidfile.read_text() == f"{master.pid}\n"
    assert "upgraded 1x, this image up" in ctl(path, "status").stdout
    master.check_running("after the upgrade")


def test_a_broken_app_on_disk_refuses_the_upgrade_and_nothing_changes(
    start: Start, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    master, port, path = ops(start, tmp_path, env={"OPS_BROKEN": str(broken)})
    before = status(path)
    broken.touch()
    done = ctl(path, "upgrade", "--wait")
    assert done.returncode == 1
    assert done.stderr.startswith(
        "prefork: error: the installed prefork cannot start this master: cannot import app "
    )
    assert "RuntimeError: ops_app: broken on purpose at import (" in done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""
    doc = status(path)
    assert doc["pid"] == master.pid and doc["upgrades"] == 0
    assert doc["started"] == before["started"] and pids(doc) == pids(before)
    assert int(get(port)) in pids(before)
    broken.unlink()  # fixed: the upgrade goes through
    assert ctl(path, "upgrade", "--wait").returncode == 0
    assert upgraded(path, before)["upgrades"] == 1


def test_a_config_file_that_now_declares_another_broker_refuses_the_upgrade(
    start: Start, tmp_path: Path
) -> None:
    config = tmp_path / "prefork.toml"
    config.write_text("graceful-timeout = 5\n")
    master, _, path = ops(start, tmp_path, "-c", str(config))
    before = status(path)
    config.write_text("graceful-timeout = 5\nreload = true\n")  # a watcher: broker 'reload'
    done = ctl(path, "upgrade", "--wait")
    assert done.returncode == 1
    assert done.stderr == (
        "prefork: error: the installed prefork cannot start this master: the brokers would be "
        "http, reload, the running master has http: an upgrade keeps the running master's; "
        "restart it to change them\n"
    )
    doc = status(path)
    assert doc["upgrades"] == 0 and pids(doc) == pids(before)
    master.check_running("after the refusal")


def test_refused_while_a_reload_runs_or_a_broker_drains(start: Start, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    master, _, path = ops(start, tmp_path, env={"OPS_BOOT_GATE": str(gate)})
    gate.touch()
    assert ctl(path, "reload").returncode == 0
    wait_until(lambda: status(path)["brokers"]["http"]["reloading"], 10, "the reload running")
    done = ctl(path, "upgrade")
    assert done.returncode == 1
    assert done.stderr == (
        "prefork: error: a reload is running; upgrade once it is done (prefork ctl reload --wait)\n"
    )
    gate.unlink()
    wait_until(lambda: not status(path)["brokers"]["http"]["reloading"], 10, "the reload done")
    assert ctl(path, "drain").returncode == 0
    wait_until(lambda: status(path)["brokers"]["http"]["draining"], 10, "drained")
    done = ctl(path, "upgrade", "--wait")
    assert done.returncode == 1
    assert done.stderr == "prefork: error: http is draining; resume it first\n"
    assert status(path)["upgrades"] == 0
    master.check_running("after the refusals")


def test_a_check_that_hangs_is_killed_at_its_deadline_and_a_second_ask_is_refused(
    start: Start, tmp_path: Path
) -> None:
    env = hooked(tmp_path, check="hang")
    master, port, path = ops(start, tmp_path, "--boot-timeout", "1", env=env)
    before = status(path)
    first = subprocess.Popen(
        [sys.executable, "-m", "prefork", "ctl", "--control", str(path), "upgrade", "--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_log(master, "upgrade: checking the installed prefork")
        second = ctl(path, "upgrade")
        assert second.returncode == 1
        assert second.stderr == "prefork: error: an upgrade is under way already\n"
        assert int(get(port)) in pids(before)  # the workers serve on meanwhile
        _, err = first.communicate(timeout=40)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 1
    assert err == (
        "prefork: error: the check of the new code did not end within --boot-timeout + 10s; "
        "it was killed\n"
    )
    doc = status(path)
    assert doc["upgrades"] == 0 and pids(doc) == pids(before)
    master.check_running("after the check was killed")


def test_a_check_that_floods_its_output_is_read_within_bounds(start: Start, tmp_path: Path) -> None:
    env = hooked(tmp_path, check="flood")
    master, _, path = ops(start, tmp_path, env=env)
    done = ctl(path, "upgrade")
    assert done.returncode == 1
    prefix = "prefork: error: the installed prefork cannot start this master: flood line 4999 "
    assert done.stderr.startswith(prefix)
    assert len(done.stderr.splitlines()) == 1 and len(done.stderr) < 400
    assert status(path)["upgrades"] == 0
    master.check_running("after the flood")


def test_a_sighup_and_a_worker_exit_inside_the_exec_window_are_handled_after(
    start: Start, tmp_path: Path
) -> None:
    env = hooked(tmp_path, signal=str(int(signal.SIGHUP)))
    master, port, path = ops(start, tmp_path, env=env)
    before = status(path)
    victim = min(pids(before))
    (tmp_path / "hooks" / "kill").write_text(str(victim))
    done = ctl(path, "upgrade", "--wait")
    assert done.returncode == 0, done.stderr
    doc = upgraded(path, before)
    assert doc["pid"] == master.pid and doc["upgrades"] == 1
    # The SIGHUP sent inside the window restarted the upgrade's reload with a newer generation.
    assert {w["generation"] for w in doc["brokers"]["http"]["workers"]} == {3}
    log = master.stderr()
    after = log[log.index("upgraded in place") :]
    assert "signal: reload" in after
    assert f"(pid {victim}) exited with signal 9" in after
    assert doc["brokers"]["http"]["crashes"] == 1
    assert victim not in master.workers()
    get(port)


def test_a_sigterm_inside_the_exec_window_drains_after_it(start: Start, tmp_path: Path) -> None:
    env = hooked(tmp_path, signal=str(int(signal.SIGTERM)))
    master, port, path = ops(start, tmp_path, env=env)
    done = ctl(path, "upgrade", "--wait")
    assert done.stdout.startswith(f"upgraded in place: master {master.pid} ")
    assert done.returncode == 1
    assert done.stderr == "prefork: error: the reload of http was rolled back: drain requested\n"
    wait_until(lambda: status(path)["brokers"]["http"]["draining"], 10, "drained")
    assert status(path)["upgrades"] == 1
    master.signal(signal.SIGUSR2)
    wait_until(lambda: len(pids(status(path))) == 2, 10, "resumed")
    get(port)


def test_a_watching_ctl_and_a_scraper_stay_connected_across_the_upgrade(
    start: Start, tmp_path: Path
) -> None:
    sock = listener()
    metrics = sock.getsockname()[1]
    sock.close()  # a free port for the metrics endpoint
    master, _, path = ops(start, tmp_path, "--metrics-bind", f"127.0.0.1:{metrics}")
    before = status(path)
    watch = subprocess.Popen(
        [sys.executable, "-m", "prefork", "ctl", "--control", str(path), "status", "--watch", *J],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    scraper = http.client.HTTPConnection("127.0.0.1", metrics, timeout=10)
    try:
        assert watch.stdout is not None
        assert json.loads(watch.stdout.readline())["upgrades"] == 0
        scraper.request("GET", "/metrics")
        assert sample(scraper.getresponse().read().decode(), "prefork_master_upgrades_total") == 0
        assert ctl(path, "upgrade", "--wait").returncode == 0
        upgraded(path, before)

        def seen_upgraded() -> bool:
            assert watch.stdout is not None
            doc = json.loads(watch.stdout.readline())
            return bool(doc["upgrades"] == 1 and doc["pid"] == master.pid)

        wait_until(seen_upgraded, 10, "the watch sees the upgrade")
        assert watch.poll() is None
        scraper.request("GET", "/metrics")  # the same keep-alive connection
        text = scraper.getresponse().read().decode()
        assert sample(text, "prefork_master_upgrades_total") == 1
    finally:
        scraper.close()
        watch.kill()
        watch.wait()


def test_an_api_master_refuses_to_upgrade(start: Start, tmp_path: Path) -> None:
    path = tmp_path / "api.ctl"
    config = {
        "master": {"control": str(path)},
        "brokers": [{"type": "jobs", "worker": "workers:Jobs", "workers": 1, "interval": 0.05}],
    }
    master = start(config)
    master.wait_ready(1, timeout=10)
    done = ctl(path, "upgrade")
    assert done.returncode == 1
    assert done.stderr == (
        "prefork: error: in-place upgrade needs a master started by prefork serve\n"
    )
    master.check_running("after the refusal")


def serve_with(
    env: dict[str, str], pass_fds: tuple[int, ...] = ()
) -> subprocess.CompletedProcess[str]:
    sock = listener()
    try:
        argv = [sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
        argv += ["--app-dir", str(SERVE_APPS), "serving:app"]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            pass_fds=(sock.fileno(), *pass_fds),
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        )
    finally:
        sock.close()


def test_prefork_upgrade_in_the_environment_that_is_not_an_upgrades_is_refused() -> None:
    for where in ("garbage", "0", "1", "2", "99999999999"):
        done = serve_with({"PREFORK_UPGRADE": where})
        assert done.returncode == 2
        assert done.stderr == (
            f"prefork: error: PREFORK_UPGRADE={where!r} does not name the state of an in-place "
            "upgrade (prefork ctl upgrade sets it for the master it re-executes; unset it)\n"
        )


def test_the_state_of_another_process_is_refused() -> None:
    fd = os.memfd_create("prefork-upgrade", 0)
    try:
        os.write(fd, json.dumps({"format": FORMAT, "pid": 1}).encode())
        os.lseek(fd, 0, os.SEEK_SET)
        done = serve_with({"PREFORK_UPGRADE": str(fd)}, (fd,))
    finally:
        os.close(fd)
    assert done.returncode == 2
    assert done.stderr.startswith(f"prefork: error: PREFORK_UPGRADE='{fd}' does not name ")
    assert done.stderr.endswith(": its state is of process 1, not this one\n")
    assert "Traceback" not in done.stderr


def test_a_broker_scaled_to_0_is_still_turned_away_by_the_new_image(
    start: Start, tmp_path: Path
) -> None:
    master, port, path = ops(start, tmp_path)
    assert ctl(path, "scale", "http", "0").returncode == 0
    wait_until(lambda: not master.workers(), 10, "no workers")
    assert answer(port) == 503  # the master turns its connections away
    done = ctl(path, "upgrade", "--wait")
    assert done.returncode == 0, done.stderr
    assert "reload done: http generation 2, 0 worker(s) replaced in " in done.stdout
    assert status(path)["upgrades"] == 1
    assert answer(port) == 503  # and so does the new image: nothing left waiting
    assert ctl(path, "scale", "http", "1").returncode == 0
    wait_until(lambda: answer(port) == 200, 10, "served again")


def answer(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_an_upgrade_with_templates_starts_new_ones_and_rolls_onto_them(
    start: Start, tmp_path: Path
) -> None:
    """Templates are not carried across the exec (their links close with it, and they leave):
    the new image starts its own, and its reload rolls the workers onto them."""
    master, port, path = ops(start, tmp_path, "--template")
    before = status(path)
    old_templates = wait_until(lambda: templates_of(master.pid), 10, "a template")
    with Load(port) as running:
        done = ctl(path, "upgrade", "--wait")
        doc = upgraded(path, before)
        served = running.ok
        wait_until(lambda: running.ok > served + 5, 10, "requests answered after the upgrade")
    assert done.returncode == 0, done.stderr
    assert running.failed == []
    assert {w["generation"] for w in doc["brokers"]["http"]["workers"]} == {2}
    new = wait_until(lambda: [t for t in [templates_of(master.pid)] if t and not t & old_templates])
    assert len(new[0]) == 1  # generation 2's; generation 1's left with the old image's links
    master.check_running("after the upgrade")


def templates_of(pid: int) -> set[int]:
    found = set()
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if b"template gen" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(int(child))
        except OSError:
            pass
    return found

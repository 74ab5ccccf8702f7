"""Templates (``template=True``) in a real master: workers fork from their generation's
template and are the master's children, a reload is a new template, a template that cannot
import rolls the reload back and the old one keeps serving crash replacements, a killed
template starts again, and the hooks run where they should."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from helpers import MasterProcess, ask, children, pong, wait_until

from prefork.master import _template

pytestmark = pytest.mark.timeout(60)

MODULE = "import os\nVERSION = {version}\nIMPORTED_IN = os.getpid()\n"


def templated(sock: socket.socket, workdir: Path, **options: Any) -> dict[str, Any]:
    """An echo broker with templates; its ``appversion`` module is in the master's workdir."""
    workdir.mkdir(exist_ok=True)
    broker = {"type": "echo", "worker": "workers:Templated", "workers": 2, "template": True}
    broker |= {"listen": [f"fd://{sock.fileno()}"], "version_module": "appversion"}
    broker |= {"hooks": str(workdir / "hooks.txt"), "boot_timeout": 10.0}
    return {"brokers": [{**broker, **options}]}


def write_version(workdir: Path, version: Any) -> None:
    text = MODULE.format(version=version) if isinstance(version, int) else version
    (workdir / "appversion.py").write_text(text)


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def titled(master: MasterProcess, what: str) -> list[int]:
    """The master's children whose title says ``what`` (``template gen``, ``standby``)."""
    found = []
    for pid in children(master.pid):
        try:
            if what.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def template_of(master: MasterProcess, workers: set[int]) -> int:
    """The template: the one child of the master that says so (workers do not)."""
    return wait_until(lambda: [p for p in [titled(master, "template gen")] if len(p) == 1])[0][0]


def standby_of(master: MasterProcess) -> int:
    """The standby worker the template forked ahead of time."""
    return wait_until(lambda: [p for p in [titled(master, "standby gen")] if len(p) == 1])[0][0]


def imported(port: int, times: int = 8) -> dict[int, int]:
    """Worker pid -> the pid of the process that imported its code."""
    return dict(tuple(map(int, ask(port, "imported").split())) for _ in range(times))  # type: ignore[misc]


def hooks(workdir: Path) -> list[tuple[str, int]]:
    lines = (workdir / "hooks.txt").read_text().split("\n")[:-1]
    return [(name, int(pid)) for name, pid in (line.split() for line in lines)]


def test_workers_fork_from_their_generations_template_and_a_reload_is_a_new_one(
    start, sock, tmp_path
):
    port = sock.getsockname()[1]
    workdir = tmp_path / "master0"
    config = templated(sock, workdir)
    write_version(workdir, 1)
    master = start(config, pass_fds=[sock])
    old = master.wait_ready(2, type="echo", timeout=15)
    template = template_of(master, old)
    assert {parent(pid) for pid in old} == {master.pid}  # the master's children, not its
    assert set(imported(port).values()) == {template}
    assert {pong(port)[2] for _ in range(6)} == {"1"}
    standby = standby_of(master)
    assert parent(standby) == master.pid
    assert sorted(hooks(workdir)) == sorted(
        [("prepare_template", template)]
        + [("before_fork", template)] * 3  # the 2 workers and the standby
        + [("after_fork", pid) for pid in old]
    )
    assert f"[echo] template of generation 1 (pid {template}) is importing" in master.stderr()

    write_version(workdir, 2)
    master.signal(signal.SIGHUP)
    assert master.wait_event("reload_done", timeout=15)[0]["replaced"] == 2
    new = master.wait_ready(2, type="echo", timeout=15)
    assert not new & old
    second = template_of(master, new)  # the old template has left, and its standby
    assert second != template
    wait_until(lambda: standby not in children(master.pid))
    assert {pong(port)[1:] for _ in range(6)} == {(2, "2")}
    assert set(imported(port).values()) == {second}
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0
    assert not children(master.pid)


def test_a_crash_is_replaced_by_the_standby_or_by_a_fork_when_it_is_gone(start, sock, tmp_path):
    port = sock.getsockname()[1]
    workdir = tmp_path / "master0"
    config = templated(sock, workdir)
    write_version(workdir, 1)
    master = start(config, pass_fds=[sock])
    workers = master.wait_ready(2, type="echo", timeout=15)
    standby = standby_of(master)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    master.wait_event("worker_crash", pid=victim)
    workers = master.wait_ready(2, type="echo", timeout=15)
    assert standby in workers  # it took the place
    assert ("after_fork", standby) in hooks(workdir)
    assert pong(port)[1:] == (1, "1")

    second = standby_of(master)  # forked once the template's link was quiet
    os.kill(second, signal.SIGKILL)  # gone: the next worker is forked as it is asked for
    wait_until(lambda: second not in children(master.pid))
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    master.wait_event("worker_crash", pid=victim)
    after = master.wait_ready(2, type="echo", timeout=15)
    assert second not in after and len(after - workers) == 1
    assert pong(port)[1:] == (1, "1")


def test_a_broken_deploy_keeps_the_old_template_and_a_crash_comes_back_on_the_old_code(
    start, sock, tmp_path
):
    port = sock.getsockname()[1]
    workdir = tmp_path / "master0"
    config = templated(sock, workdir)
    write_version(workdir, 1)
    master = start(config, pass_fds=[sock])
    old = master.wait_ready(2, type="echo", timeout=15)
    template = template_of(master, old)

    write_version(workdir, "raise RuntimeError('broken deploy')\n")
    master.signal(signal.SIGHUP)
    failed = master.wait_event("reload_failed", timeout=15)[0]
    reason = "the template of generation 2 could not start: RuntimeError: broken deploy"
    assert failed["reason"] == reason and failed["replaced"] == 0
    assert master.stderr().count("RuntimeError: broken deploy") == 2  # once, and the rollback
    assert not master.events("worker_exit") and not master.events("worker_crash")

    victim = min(old)
    os.kill(victim, signal.SIGKILL)
    master.wait_event("worker_crash", pid=victim)
    after = master.wait_ready(2, type="echo", timeout=15)
    assert victim not in after
    assert template_of(master, after) == template
    assert {pong(port)[1:] for _ in range(8)} == {(1, "1")}
    assert set(imported(port).values()) == {template}


def test_a_template_that_cannot_import_on_the_first_start_stops_the_master(start, sock, tmp_path):
    workdir = tmp_path / "master0"
    config = templated(sock, workdir)
    write_version(workdir, "raise RuntimeError('broken from the start')\n")
    master = start(config, pass_fds=[sock])
    assert master.wait_exit() == 3
    err = master.stderr()
    assert "template of generation 1 could not start:\nTraceback" in err
    assert "no echo worker could start (the template of generation 1 could not start" in err


def test_a_killed_template_starts_again_and_workers_keep_serving(start, sock, tmp_path):
    port = sock.getsockname()[1]
    workdir = tmp_path / "master0"
    config = templated(sock, workdir)
    write_version(workdir, 1)
    master = start(config, pass_fds=[sock])
    workers = master.wait_ready(2, type="echo", timeout=15)
    template = template_of(master, workers)
    os.kill(template, signal.SIGKILL)
    wait_until(lambda: "template of generation 1 exited with signal 9" in master.stderr())
    second = template_of(master, workers)
    assert second != template
    wait_until(lambda: "template of generation 1 is ready" in master.stderr().split("signal 9")[1])
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    master.wait_event("worker_crash", pid=victim)
    (replacement,) = master.wait_ready(2, type="echo", timeout=15) - workers
    seen = wait_until(lambda: [s for s in [imported(port, 4)] if replacement in s])[0]
    assert seen[replacement] == second  # forked from the new template


def test_a_worker_whose_after_fork_raises_fails_its_start(start, sock, tmp_path):
    workdir = tmp_path / "master0"
    config = templated(sock, workdir, fail="after_fork", workers=1)
    write_version(workdir, 1)
    master = start(config, pass_fds=[sock])
    assert master.wait_exit() == 3
    assert "RuntimeError: after_fork was asked to raise" in master.stderr()


def test_a_before_fork_that_raises_fails_the_spawn_and_the_master_backs_off(start, sock, tmp_path):
    workdir = tmp_path / "master0"
    config = templated(sock, workdir, fail="before_fork", workers=1)
    write_version(workdir, 1)
    master = start(config, pass_fds=[sock])
    why = "the template could not fork it: RuntimeError: before_fork was asked to raise"
    # the third after a backoff, while the template tried a standby (whose before_fork
    # raised too: the next request's fork says so)
    wait_until(lambda: master.stderr().count(why) >= 3, timeout=15)
    master.check_running()


def test_a_worker_the_middle_process_could_not_fork_is_an_error(monkeypatch):
    """The middle process leaves without naming a worker (its fork failed): an ``OSError``
    the template answers the master with."""
    monkeypatch.setattr(_template, "_middle", lambda *args: os._exit(0))
    with pytest.raises(OSError, match="the worker could not be forked"):
        _template.fork_adopted(lambda parent: 0)


def test_ctl_status_shows_the_templates_with_their_pids(start, sock, tmp_path):
    """``prefork ctl status`` (JSON and the table) names each template: generation, state,
    pid; a reload's template shows beside the serving one until the reload is done."""
    from test_process_ctl import ctl, status

    workdir = tmp_path / "master0"
    path = tmp_path / "m.ctl"
    config = templated(sock, workdir, workers=1) | {"master": {"control": str(path)}}
    write_version(workdir, 1)
    master = start(config, pass_fds=[sock])
    master.wait_ready(1, type="echo", timeout=15)
    template = template_of(master, set())
    (row,) = status(path)["brokers"]["echo"]["templates"]
    assert (row["generation"], row["state"], row["pid"]) == (1, "ready", template)
    table = ctl(path, "status").stdout
    assert f"  templates: gen 1 ready (pid {template}, up " in table
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0

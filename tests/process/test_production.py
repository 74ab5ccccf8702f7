"""Where production runs: SIGTERM as PID 1 (a PID namespace, as in a container) and under
systemd stops the master after in-flight work; on a host it drains and the master stays;
/livez and /readyz from the master; --shutdown-delay keeps serving, not ready, before the
stop; orphans the workers leave are reaped.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import ROOT, MasterProcess, is_template, listener, wait_until
from test_serve import SERVE_APPS, Start

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def probe(port: int, path: str) -> int:
    try:
        return get(port, path, timeout=3)[0]
    except OSError:
        return -1


def serve(
    start: Start, *options: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> tuple[MasterProcess, int, int]:
    """``prefork serve serving:app`` with 2 workers and --health-bind; returns the process,
    the app's port and the health port once it serves."""
    sock, health = listener(), free_port()
    port = sock.getsockname()[1]
    argv = [*prefix, sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
    argv += ["--app-dir", str(SERVE_APPS), "--workers", "2", "--health-bind"]
    argv += [f"127.0.0.1:{health}", *options, "serving:app"]
    clean = {"INVOCATION_ID": "", "NOTIFY_SOCKET": "", **(env or {})}
    master = start(argv, pass_fds=[sock], env=clean)
    wait_until(lambda: probe(health, "/readyz") == 200, 15, "/readyz to say ready")
    return master, port, health


def slow_request(port: int, answers: list[object]) -> threading.Thread:
    def run() -> None:
        try:
            answers.append(get(port, "/slow?t=1.5", timeout=15)[0])
        except OSError as exc:
            answers.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def all_children(pid: int) -> set[int]:
    """``pid``'s children, zombies too, but its templates and standbys (a standby is forked
    once its template's link is quiet: at any moment)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split() if not is_template(int(p))}


def orphans_are_reaped(master: int, port: int, tmp_path: Path) -> None:
    """Three orphans a worker leaves become the master's children, and once they exit the
    master reaps them: none is left a zombie."""
    # both workers (/readyz says ready with one; the other, forked by the template, may not
    # be the master's child yet)
    workers = wait_until(lambda: w if len(w := all_children(master)) == 2 else None, 10)
    release = tmp_path / "release"
    for _ in range(3):
        assert get(port, f"/orphan?until={release}")[0] == 200
    wait_until(lambda: len(all_children(master) - workers) == 3, 10, "the orphans adopted")
    release.touch()
    wait_until(lambda: all_children(master) == workers, 10, "the orphans reaped")


def test_as_pid_1_sigterm_stops_after_in_flight_work_and_orphans_are_reaped(
    start: Start, tmp_path: Path
) -> None:
    """In a PID namespace the master is PID 1, as in a container with no init: it reaps what
    is reparented to it, and SIGTERM (docker stop, a pod's end) is a stop, not a drain."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a PID namespace needs root and unshare (CI has both)")
    events = tmp_path / "events"
    env = {"SERVE_APP_EVENTS": str(events)}
    prefix = ("unshare", "--pid", "--fork", "--mount-proc")
    master, port, _ = serve(start, prefix=prefix, env=env)
    (pid,) = wait_until(lambda: master.workers(), 10, "the master inside the namespace")
    assert "SIGTERM stops (the master is PID 1: --sigterm auto)" in master.stderr()
    orphans_are_reaped(pid, port, tmp_path)
    answers: list[object] = []
    thread = slow_request(port, answers)
    wait_until(lambda: events.exists() and "start" in events.read_text(), 5, "/slow begun")
    began = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    assert master.wait_exit(20) == 0
    took = time.monotonic() - began
    thread.join(10)
    assert answers == [200]
    assert took < 10, f"SIGTERM to exit took {took:.1f}s"


def test_under_systemd_sigterm_stops(start: Start) -> None:
    master, _, _ = serve(start, env={"INVOCATION_ID": "0123456789abcdef"})
    assert "SIGTERM stops (under systemd: --sigterm auto)" in master.stderr()
    master.signal(signal.SIGTERM)
    assert master.wait_exit(20) == 0


def test_on_a_host_sigterm_drains_readyz_says_so_and_sigusr2_resumes(
    start: Start, tmp_path: Path
) -> None:
    master, port, health = serve(start)
    assert "SIGTERM drains, the master stays (on a host: --sigterm auto)" in master.stderr()
    orphans_are_reaped(master.pid, port, tmp_path)  # on a host: as a child subreaper
    assert probe(health, "/livez") == 200
    master.signal(signal.SIGTERM)
    wait_until(lambda: probe(health, "/readyz") == 503, 10, "/readyz 503 while drained")
    _, body = get(health, "/readyz")
    assert body == b'{"ready":false,"brokers":{"http":"drained"}}\n'
    assert probe(health, "/livez") == 200  # the master is alive and well
    master.check_running("the drain")
    master.signal(signal.SIGUSR2)
    wait_until(lambda: probe(health, "/readyz") == 200, 15, "/readyz 200 after SIGUSR2")


def test_the_shutdown_delay_serves_not_ready_then_stops(start: Start) -> None:
    """Kubernetes removes a pod from its endpoints as it sends SIGTERM; for a while traffic
    still comes: with --shutdown-delay it is served, and /readyz tells the balancer to stop."""
    master, port, health = serve(start, "--sigterm", "stop", "--shutdown-delay", "4")
    began = time.monotonic()
    master.signal(signal.SIGTERM)
    wait_until(lambda: probe(health, "/readyz") == 503, 5, "/readyz 503 in the delay")
    served = [get(port)[0] for _ in range(10)]
    # Still in the delay once they were served (not in the drain that follows it):
    said = get(health, "/readyz")[1]
    assert said == b'{"ready":false,"brokers":{"http":"shutting down (--shutdown-delay)"}}\n'
    assert served == [200] * 10
    assert master.wait_exit(20) == 0
    assert time.monotonic() - began >= 4
    assert "stopping in 4s (--shutdown-delay): serving meanwhile, not ready" in master.stderr()


def test_serve_help_names_the_production_options() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "prefork", "serve", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    ).stdout
    for flag in ("--sigterm {drain,stop,auto}", "--shutdown-delay SECONDS", "--health-bind ADDR"):
        assert flag in help_text

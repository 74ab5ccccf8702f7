"""A real master: its workers, crash replacement, drain/resume/stop, scaling, no orphans."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from typing import Any

import pytest
from helpers import alive, ask, pong, proc_state, wait_until

pytestmark = pytest.mark.timeout(30)


def echo(sock: socket.socket, workers: int = 2, **options: Any) -> dict[str, Any]:
    broker = {"type": "echo", "worker": "workers:Echo", "workers": workers}
    broker["listen"] = [f"fd://{sock.fileno()}"]
    return {"brokers": [{**broker, **options}]}


def test_pids_under_the_master_match_workers(start, sock):
    port = sock.getsockname()[1]
    master = start(echo(sock, workers=3), pass_fds=[sock])
    pids = master.wait_ready(3)
    assert master.workers() == pids
    served = {pong(port)[0] for _ in range(30)}
    assert served <= pids
    assert "echo x3 on 127.0.0.1:" in master.stderr()


def test_kill_9_is_replaced_with_exactly_one_crash(start, sock):
    port = sock.getsockname()[1]
    master = start(echo(sock, workers=2), pass_fds=[sock])
    before = master.wait_ready(2)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    master.wait_event("worker_crash", pid=victim)
    after = master.wait_ready(2)
    assert victim not in after and len(after & before) == 1
    master.wait_workers(2)
    crashes = master.events("worker_crash")
    assert [(c["pid"], c["signal"], c["code"]) for c in crashes] == [(victim, signal.SIGKILL, None)]
    assert not master.events("worker_exit")
    assert pong(port)[0] in after


def ping_once(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"ping\n")
        return conn.recv(100)


def test_sigterm_drains_and_sigusr2_resumes(start, sock):
    port = sock.getsockname()[1]
    master = start(echo(sock, workers=2), pass_fds=[sock])
    first = master.wait_ready(2)
    master.signal(signal.SIGTERM)
    master.wait_event("worker_exit", count=2)
    master.wait_workers(0)
    assert {e["pid"] for e in master.events("worker_exit")} == first
    assert not master.events("worker_crash")
    assert alive(master.pid)
    assert "drained: new connections are turned away; SIGUSR2 resumes" in master.stderr()
    # The socket stays bound, and a client is turned away at once instead of hanging in
    # the backlog: a reset (the echo worker type has no drained_reply), which it fails over on.
    for _ in range(3):
        began = time.monotonic()
        with pytest.raises((ConnectionResetError, BrokenPipeError)):  # at any step
            ping_once(port)
        assert time.monotonic() - began < 1.0
    master.signal(signal.SIGUSR2)
    second = master.wait_ready(2)
    assert not second & first
    assert pong(port)[0] in second


def test_sigterm_stops_when_the_master_is_told_so(start, sock):
    """--sigterm stop (Master(sigterm="stop")), for process managers that stop with SIGTERM."""
    master = start({**echo(sock, workers=2), "master": {"sigterm": "stop"}}, pass_fds=[sock])
    pids = master.wait_ready(2)
    master.signal(signal.SIGTERM)
    assert master.wait_exit() == 0
    assert {e["pid"] for e in master.events("worker_exit")} == pids


def test_sigint_stops_with_exit_0(start, sock):
    master = start(echo(sock, workers=2), pass_fds=[sock])
    pids = master.wait_ready(2)
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0
    assert {e["pid"] for e in master.events("worker_exit")} == pids
    assert master.events("master_exit") == [master.events("master_exit")[0]]
    assert not any(alive(p) for p in pids)


def test_second_sigint_kills_at_once(start, sock):
    port = sock.getsockname()[1]
    config = echo(sock, workers=2, worker="workers:Stubborn", graceful_timeout=60)
    master = start(config, pass_fds=[sock])
    pids = master.wait_ready(2)
    master.signal(signal.SIGINT)
    wait_until(lambda: "stopping: draining" in master.stderr(), 5)
    assert master.workers() == pids  # they ignore SIGTERM

    # The second SIGINT and the death of a worker reach the master while it is busy in a
    # slow callback: whichever it handles first, it must neither fail nor hang. (The Kill of
    # a worker already reaped is covered without a race in tests/unit/test_master.py.)
    # Draining, the master turns connections away too: it and the stubborn workers race to
    # accept, and a connection the master took is closed unanswered. Ask until a worker answers.
    def a_worker_answers() -> bool:
        with contextlib.suppress(ConnectionError):
            return ask(port, 'send {"sleep": 1.0}').startswith("ok ")
        return False

    wait_until(a_worker_answers, 10, "a stubborn worker, not the master, taking the request")
    master.wait_event("worker_message", msg={"sleep": 1.0})
    master.signal(signal.SIGINT)
    os.kill(min(pids), signal.SIGKILL)
    # A zombie while the master sleeps; gone already if the master woke first (a busy machine
    # can keep this test from looking in time).
    wait_until(lambda: proc_state(min(pids)) in ("Z", None), 5, "the killed worker dead")
    assert master.wait_exit(15) == 0
    exits = master.events("worker_exit")
    assert {(e["pid"], e["signal"]) for e in exits} == {(p, signal.SIGKILL) for p in pids}
    assert "stopping at once" in master.stderr()


def test_sigttin_sigttou_change_the_count(start, sock):
    master = start(echo(sock, workers=2), pass_fds=[sock])
    master.wait_ready(2)
    master.signal(signal.SIGTTIN)
    master.wait_ready(3)
    master.signal(signal.SIGTTOU)
    master.wait_workers(2)
    master.signal(signal.SIGTTOU)
    master.wait_workers(1)
    master.signal(signal.SIGTTOU)  # never below one worker by signal
    wait_until(lambda: master.stderr().count("scaled to 1 worker") == 2, 5)
    assert len(master.workers()) == 1
    assert len(master.events("worker_exit")) == 2 and not master.events("worker_crash")


def test_no_orphans_after_the_master_is_sigkilled(start, sock):
    master = start(echo(sock, workers=3), pass_fds=[sock])
    pids = master.wait_ready(3)
    # Stopped, the workers cannot leave on their own when the master's channel closes: only
    # the parent-death signal can end them. (Running, one could be killed half-way through
    # writing its coverage data on the way out, leaving an empty data file.)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: all(proc_state(p) == "T" for p in pids), 5, "workers stopped")
    os.kill(master.pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in pids), 5, "workers die with the master")


def test_ctrl_c_in_a_terminal_stops_gracefully(start, sock):
    """Ctrl-C sends SIGINT to the whole foreground process group, workers included: they
    leave it to the master, which drains them (worker_exit, not worker_crash)."""
    master = start(echo(sock, workers=2), pass_fds=[sock])
    pids = master.wait_ready(2)
    os.killpg(master.pid, signal.SIGINT)
    assert master.wait_exit() == 0
    assert {(e["pid"], e["code"]) for e in master.events("worker_exit")} == {(p, 0) for p in pids}
    assert not master.events("worker_crash")


def test_what_a_worker_forked_is_adopted_and_ended_with_the_master(start, sock):
    """A worker's own child keeps the listening socket: when the worker is replaced the master
    adopts it (it is a child subreaper), and when the master stops it ends it, so nothing
    holds the port once the master is gone."""
    port = sock.getsockname()[1]
    master = start(echo(sock, workers=1), pass_fds=[sock])
    (worker,) = master.wait_ready(1)
    grandchild = int(ask(port, "fork").split()[1])
    assert alive(grandchild) and grandchild not in master.workers()
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: grandchild in master.workers(), 5)  # adopted by the master
    wait_until(lambda: len(master.ready_pids()) == 1 and worker not in master.ready_pids(), 5)
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0
    assert proc_state(grandchild) is None  # ended and reaped, not left to init

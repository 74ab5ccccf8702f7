"""Workers that misbehave (hang, ignore SIGTERM, flood, crash-loop) and a master that carries
on through all of it, including its user's own callbacks raising."""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

import pytest
from helpers import Conn, alive, ask, pong, proc_state, tell, wait_until

pytestmark = pytest.mark.timeout(30)


def echo(sock: socket.socket, workers: int = 1, **options: Any) -> dict[str, Any]:
    broker = {"type": "echo", "worker": "workers:Echo", "workers": workers}
    broker["listen"] = [f"fd://{sock.fileno()}"]
    return {"brokers": [{**broker, **options}]}


def test_hung_worker_gets_its_stack_dumped_killed_and_replaced(start, sock):
    port = sock.getsockname()[1]
    master = start(echo(sock, timeout=1), pass_fds=[sock])
    (hung,) = master.wait_ready(1)
    tell(port, "hang")
    crash = master.wait_event("worker_crash", timeout=5, pid=hung)[0]
    assert crash["signal"] == signal.SIGKILL
    err = master.stderr()
    assert "is hung; dumping its stack" in err
    assert "most recent call first" in err and "_hang_forever" in err  # faulthandler's dump
    (new,) = master.wait_ready(1)
    assert pong(port)[0] == new != hung


def test_worker_ignoring_sigterm_is_killed_after_graceful_timeout(start, sock):
    master = start(echo(sock, worker="workers:Stubborn", graceful_timeout=0.5), pass_fds=[sock])
    (pid,) = master.wait_ready(1)
    master.signal(signal.SIGTERM)
    left = master.wait_event("worker_exit", timeout=5)[0]
    assert (left["pid"], left["signal"]) == (pid, signal.SIGKILL)
    assert left["uptime"] > 0.5
    assert "did not leave within graceful_timeout (0.5s); killing it" in master.stderr()
    assert "did not leave within graceful_timeout (0.5s): killed" in master.stderr()
    assert "left as asked" not in master.stderr()
    assert not master.events("worker_crash")


def test_worker_flooding_oversized_frames_is_replaced_and_the_master_survives(start, sock):
    port = sock.getsockname()[1]
    master = start(echo(sock, workers=2), pass_fds=[sock])
    before = master.wait_ready(2)
    reply = ask(port, "flood")
    flooder = int(reply.split()[1])
    master.wait_event("worker_crash", pid=flooder)
    assert "sent a bad frame" in master.stderr()
    after = master.wait_ready(2)
    assert flooder not in after and len(after & before) == 1
    assert alive(master.pid)
    assert {pong(port)[0] for _ in range(10)} <= after


def test_exception_in_a_user_callback_is_logged_and_the_master_carries_on(start, sock):
    port = sock.getsockname()[1]
    master = start(echo(sock), pass_fds=[sock])
    (pid,) = master.wait_ready(1)
    ask(port, 'send {"raise": 1}')
    wait_until(lambda: "worker_message callback" in master.stderr(), 5)
    assert "RuntimeError: a user callback raised" in master.stderr()
    ask(port, 'send "after"')
    master.wait_event("worker_message", msg="after")
    assert master.workers() == {pid} and not master.events("worker_crash")


def test_unrequested_exits_are_crashes_and_replaced(start, sock):
    """Exit code 0 that nobody asked for, a worker's own SIGTERM, a failing shutdown."""
    port = sock.getsockname()[1]
    master = start(echo(sock, shutdown_delay=0.3), pass_fds=[sock])
    (first,) = master.wait_ready(1)
    tell(port, "exit 0")
    assert master.wait_event("worker_crash", pid=first)[0]["code"] == 0
    (second,) = master.wait_ready(1)
    os.kill(second, signal.SIGTERM)  # not from the master
    master.wait_event("worker_message", msg={"stopping": second})
    os.kill(second, signal.SIGTERM)  # while it is stopping: changes nothing
    assert master.wait_event("worker_crash", pid=second)[0]["code"] == 0
    (third,) = master.wait_ready(1)
    assert "before it was ready" not in master.stderr()
    assert pong(port)[0] == third


def test_failing_prepare_for_shutdown_exits_1(start, sock):
    master = start(echo(sock, shutdown_raises=True), pass_fds=[sock])
    (pid,) = master.wait_ready(1)
    master.signal(signal.SIGTERM)
    left = master.wait_event("worker_exit", pid=pid)[0]
    assert left["code"] == 1
    assert "prepare_for_shutdown raised" in master.stderr()


def test_a_first_start_that_cannot_boot_exits_3_with_the_error_printed_once(start):
    config = {
        "brokers": [
            {"type": "broken", "worker": "workers:Broken", "workers": 3},
            {"type": "bad", "worker": "workers:NotAWorker", "timeout": 0},
        ],
    }
    master = start(config)
    assert master.wait_exit(10) == 3
    err = master.stderr()
    assert "worker could start" in err and "stopping the master (exit code 3)" in err
    # Each distinct error once, as one block with its traceback; never a retry loop.
    broken = err.count("RuntimeError: this worker cannot boot\n")
    bad = err.count("TypeError: 'workers:NotAWorker' is")
    assert broken <= 1 and bad <= 1 and broken + bad >= 1
    assert err.count("Traceback (most recent call last)") == broken + bad
    assert "failed early" not in err and "backing off" not in err
    assert not master.events("worker_ready")


def test_crash_loop_after_serving_backs_off_and_the_master_stays(start, tmp_path):
    breaker = tmp_path / "broken"
    config = {
        "master": {"backoff_base": 0.1, "backoff_cap": 0.4},
        "brokers": [{"type": "flaky", "worker": "workers:BootsUntil", "until": str(breaker)}],
    }
    master = start(config)
    (pid,) = master.wait_ready(1)
    breaker.write_text("from now on, init() raises")
    os.kill(pid, signal.SIGKILL)
    began = time.monotonic()
    master.wait_event("worker_crash", type="flaky", count=6, timeout=10)
    elapsed = time.monotonic() - began
    crashes = len(master.events("worker_crash")) - 1  # the kill, then the boot failures
    # Backoff doubles from 0.1 s to a 0.4 s cap: a tight loop would crash hundreds of times.
    assert crashes <= 2 + elapsed / 0.2 + 2
    err = master.stderr()
    assert err.count("RuntimeError: this worker cannot boot any more") == 1  # printed once
    assert "the same error again" in err
    assert "failed starts in a row: backing off, next start in" in err
    assert alive(master.pid)


def test_failed_fork_is_retried_and_a_stray_child_is_ignored(start, sock):
    port = sock.getsockname()[1]
    master = start({**echo(sock), "fail_forks": 1, "stray_child": True}, pass_fds=[sock])
    master.wait_ready(1, type="echo")
    assert "could not start worker 1: [Errno 11] injected fork failure" in master.stderr()
    (stray,) = (e["pid"] for e in master.events("stray"))
    workers = master.workers() - {stray}
    os.kill(stray, signal.SIGKILL)
    wait_until(lambda: proc_state(stray) is None, 5, "the master reaps the stray child")
    assert master.workers() == workers and not master.events("worker_crash")
    assert pong(port)


def test_master_loop_dying_closes_the_channels_and_workers_leave(start, sock):
    """If the master's loop raises (here: a callback raising SystemExit), the workers see
    their channel close and exit, even while the master's process is still alive."""
    port = sock.getsockname()[1]
    master = start({**echo(sock, workers=2), "linger": 3}, pass_fds=[sock])
    pids = master.wait_ready(2)
    tell(port, 'send {"exit": 1}')
    master.wait_event("master_raised")
    wait_until(lambda: not any(alive(p) for p in pids), 5, "workers leave on channel EOF")
    assert alive(master.pid)
    assert master.wait_exit(10) == 3


def test_worker_leaving_while_the_master_is_busy_in_a_slow_callback(start, sock):
    """While a callback blocks the master, a signal arrives, a worker sends a message that
    makes the master write to every worker, and another worker dies: once the callback
    returns, the master sorts it all out (the dead worker's channel is skipped)."""
    port = sock.getsockname()[1]
    master = start(echo(sock, workers=2), pass_fds=[sock])
    a, b = sorted(master.wait_ready(2))
    to_a, to_b = Conn(port, a), Conn(port, b)
    assert to_a.ask('send {"sleep": 1.0}') == f"ok {a}"
    master.wait_event("worker_message", msg={"sleep": 1.0})
    master.signal(signal.SIGUSR1)  # reopen logs: nothing to reopen when logging to stderr
    assert to_a.ask('send {"ask": "late"}') == f"ok {a}"
    to_b.tell("exit 5")
    wait_until(lambda: proc_state(b) in ("Z", None), 5, "worker b exits")
    assert master.wait_event("worker_crash", pid=b)[0]["code"] == 5
    got = master.wait_event("worker_message", msg={"got": "late"})
    assert [e["pid"] for e in got] == [a]
    master.wait_ready(2)
    to_a.close()
    to_b.close()


def test_worker_dying_with_frames_waiting_for_it(start, sock):
    port = sock.getsockname()[1]
    master = start(echo(sock), pass_fds=[sock])
    (pid,) = master.wait_ready(1)
    tell(port, "stall-exit 0.5")
    assert master.wait_event("worker_crash", pid=pid)[0]["code"] == 4
    master.wait_ready(1)
    assert alive(master.pid)


def test_a_master_paused_longer_than_timeout_keeps_its_healthy_workers(start, sock):
    """SIGSTOP (Ctrl-Z, a debugger, a paused VM) then SIGCONT: the heartbeats that waited in
    the channels count, and every worker gets a fresh window; none is killed as hung."""
    port = sock.getsockname()[1]
    master = start(echo(sock, workers=2, timeout=1), pass_fds=[sock])
    workers = master.wait_ready(2)
    master.signal(signal.SIGSTOP)
    try:
        time.sleep(2.5)  # the pause under test: over twice the heartbeat timeout
    finally:
        master.signal(signal.SIGCONT)
    wait_until(lambda: "fresh heartbeat window" in master.stderr(), 5)
    assert all(alive(pid) for pid in workers)
    assert {pong(port)[0] for _ in range(8)} <= workers
    assert not master.events("worker_crash") and "is hung" not in master.stderr()

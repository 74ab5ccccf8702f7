"""Messages both ways, two worker types in one master, recycling, and the Broker API."""

from __future__ import annotations

import signal
import socket
from typing import Any

import pytest
from helpers import ask, pong, wait_until

pytestmark = pytest.mark.timeout(30)


def echo(sock: socket.socket, workers: int = 1, **options: Any) -> dict[str, Any]:
    broker = {"type": "echo", "worker": "workers:Echo", "workers": workers}
    broker["listen"] = [f"fd://{sock.fileno()}"]
    return {**broker, **options}


def test_messages_both_ways_with_two_worker_types(start, sock):
    port = sock.getsockname()[1]
    config = {
        "brokers": [
            echo(sock, workers=2),
            {"type": "jobs", "worker": "workers:Jobs", "interval": 0.05, "timeout": 0},
        ]
    }
    master = start(config, pass_fds=[sock])
    echoes = master.wait_ready(2, type="echo")
    (jobs,) = master.wait_ready(1, type="jobs")
    assert master.workers() == echoes | {jobs}

    # worker.send -> the master's worker_message callback (the jobs worker reports progress).
    progress = master.wait_event("worker_message", type="jobs", count=3)
    assert [e["msg"] for e in progress[:3]] == [{"progress": n} for n in (1, 2, 3)]
    assert all(e["pid"] == jobs for e in progress)

    # broker.send -> Worker.on_message of each of that broker's workers (and nobody else's).
    ask(port, 'send {"ask": "hello"}')
    got = master.wait_event("worker_message", msg={"got": "hello"}, count=2)
    assert {e["pid"] for e in got} == echoes
    assert not master.events("worker_message", type="jobs", msg={"got": "hello"})

    ask(port, 'report {"load": 0.5}')
    report = master.wait_event("worker_report")[0]
    assert report["msg"] == {"load": 0.5} and report["pid"] in echoes

    # A reload covers both types.
    master.signal(signal.SIGHUP)
    master.wait_event("reload_done", type="echo")
    master.wait_event("reload_done", type="jobs")
    assert not master.wait_ready(3) & (echoes | {jobs})


def test_on_message_raising_is_logged_and_the_worker_stays(start, sock):
    port = sock.getsockname()[1]
    master = start({"brokers": [echo(sock)]}, pass_fds=[sock])
    (pid,) = master.wait_ready(1)
    ask(port, 'send {"ask": "raise"}')
    wait_until(lambda: "on_message raised" in master.stderr(), 5)
    ask(port, 'send {"ask": 7}')
    master.wait_event("worker_message", msg={"got": 7})
    assert master.workers() == {pid}


def test_big_messages_wait_for_a_stalled_worker(start, sock):
    """The master queues what a busy worker cannot take yet and sends it when it can."""
    port = sock.getsockname()[1]
    master = start({"brokers": [echo(sock)]}, pass_fds=[sock])
    (pid,) = master.wait_ready(1)
    answer = ask(port, "stall 0.5", timeout=5)  # asks for 4 x 300 kB, then blocks
    assert answer == f"ok {pid}"
    got = master.wait_event("worker_message", msg={"got": {"len": 300_000}}, count=4)
    assert len(got) == 4
    # A last message bigger than the socket buffer still reaches the master before the exit.
    ask(port, "bigsend-exit 900000")
    master.wait_event("worker_message", pid=pid, msg="x" * 900_000)
    assert master.wait_event("worker_crash", pid=pid)[0]["code"] == 0
    # ...but a worker does not wait forever for a master that does not read (here: busy in
    # a slow callback); it leaves after about a second.
    (second,) = master.wait_ready(1)
    ask(port, "bigsend-exit 900000 2.0")
    assert master.wait_event("worker_crash", pid=second, timeout=8)[0]["code"] == 0


def test_broker_api_from_callbacks(start, sock):
    port = sock.getsockname()[1]
    master = start({"brokers": [echo(sock, recycle_rate=0)]}, pass_fds=[sock])
    master.wait_ready(1)

    def status(n: int) -> dict[str, Any]:
        """Ask for the broker's properties (a callback runs them in the master)."""
        ask(port, 'send {"ctl": "status"}')
        return master.wait_event("status", count=n)[n - 1]

    ask(port, 'send {"ctl": "scale", "n": 3}')  # prints a status too (1)
    master.wait_ready(3)
    assert status(2) == {**status(2), "workers": 3, "draining": False, "recycle_rate": 0}
    ask(port, 'send {"ctl": "drain"}')  # (4)
    master.wait_workers(0)
    master.signal(signal.SIGUSR2)
    master.wait_ready(3)
    ask(port, 'send {"ctl": "resume"}')  # (5) resuming a broker that runs changes nothing
    assert status(6)["draining"] is False
    assert len(master.workers()) == 3


def test_retire_replaces_the_worker_through_the_rolling_path(start, sock):
    port = sock.getsockname()[1]
    master = start({"brokers": [echo(sock, worker="workers:LateReady", listen=[])]})
    master.wait_ready(1)
    master.stop()
    master = start({"brokers": [echo(sock)]}, pass_fds=[sock])
    (old,) = master.wait_ready(1)
    ask(port, "retire")
    master.wait_event("worker_exit", pid=old)
    (new,) = master.wait_ready(1)
    names = [e["e"] for e in master.events() if e["e"] in ("worker_ready", "worker_exit")]
    assert names == ["worker_ready", "worker_ready", "worker_exit"]  # the new one first
    assert pong(port)[0] == new != old


def test_recycle_rate_replaces_workers_one_at_a_time(start, sock):
    port = sock.getsockname()[1]
    master = start({"brokers": [echo(sock, workers=2, recycle_rate=0.6)]}, pass_fds=[sock])
    first = master.wait_ready(2)
    master.wait_event("worker_exit", count=4, timeout=10)
    # Replay the events: a worker leaves only once its replacement is ready (never fewer
    # than 2 ready), and replacements go one at a time: at most the new one and the old one
    # on its way out beside the two (the next swap may start while the last old one drains).
    live: set[int] = set()
    most = 0
    for e in master.events():
        if e["e"] == "worker_ready":
            live.add(e["pid"])
        elif e["e"] in ("worker_exit", "worker_crash"):
            assert len(live) >= 3, "a worker left before its replacement was ready"
            live.discard(e["pid"])
        most = max(most, len(live))
    assert most <= 4
    assert first <= {e["pid"] for e in master.events("worker_exit")}
    assert not master.events("worker_crash")
    assert pong(port)

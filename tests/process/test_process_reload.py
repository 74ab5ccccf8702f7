"""Rolling reloads on a real master: capacity never drops, broken code is rolled back."""

from __future__ import annotations

import signal
import socket
import threading
from typing import Any

import pytest
from helpers import MasterProcess, ask, pong, wait_until

pytestmark = pytest.mark.timeout(40)


def echo(sock: socket.socket, workers: int, **options: Any) -> dict[str, Any]:
    broker = {"type": "echo", "worker": "workers:Echo", "workers": workers}
    broker["listen"] = [f"fd://{sock.fileno()}"]
    return {"brokers": [{**broker, **options}]}


class Client(threading.Thread):
    """Connects in a loop (a new connection per request) and counts answers and failures."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stopped = threading.Event()
        self.answers: list[tuple[int, int]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                pid, gen, _ = pong(self.port)
                self.answers.append((pid, gen))
            except (OSError, ValueError, AssertionError) as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> Client:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join(5)


def live_ready_counts(master: MasterProcess) -> list[int]:
    """Replay ready/exit events in order: how many ready workers there were after each."""
    live: set[int] = set()
    counts = []
    for e in master.events():
        if e["e"] == "worker_ready":
            live.add(e["pid"])
        elif e["e"] in ("worker_exit", "worker_crash"):
            live.discard(e["pid"])
        else:
            continue
        counts.append(len(live))
    return counts


def test_sighup_replaces_every_worker_without_a_failed_connection(start, sock):
    port = sock.getsockname()[1]
    master = start(echo(sock, workers=3), pass_fds=[sock])
    old = master.wait_ready(3)
    with Client(port) as client:
        wait_until(lambda: len(client.answers) >= 20, 5)
        master.signal(signal.SIGHUP)
        done = master.wait_event("reload_done", timeout=10)[0]
        new = master.wait_ready(3)
        seen = len(client.answers)
        wait_until(lambda: len(client.answers) >= seen + 20, 5)
    assert client.failures == []
    assert done["gen"] == 2 and done["replaced"] == 3 and done["reason"] == ""
    assert not new & old
    assert {e["pid"] for e in master.events("worker_exit")} == old
    assert not master.events("worker_crash")
    # The new generation was up before the old one left: never fewer than 3 ready workers.
    counts = live_ready_counts(master)
    assert min(counts[3:]) >= 3
    assert {gen for _, gen in client.answers[-10:]} == {2}


def test_reload_onto_broken_code_rolls_back_then_new_code_is_picked_up(start, sock, tmp_path):
    port = sock.getsockname()[1]
    module = tmp_path / "master0" / "appversion.py"  # the master's workdir is on its sys.path
    module.parent.mkdir()
    module.write_text("VERSION = 1\n")
    config = echo(sock, workers=2, version_module="appversion", boot_timeout=1.5)
    master = start(config, pass_fds=[sock])
    old = master.wait_ready(2)
    assert pong(port)[2] == "1"

    module.write_text("raise RuntimeError('broken deploy')\n")
    master.signal(signal.SIGHUP)
    failed = master.wait_event("reload_failed", timeout=10)[0]
    assert "before it was ready" in failed["reason"] and failed["replaced"] == 0
    assert master.wait_workers(2) == old
    assert {pong(port)[0] for _ in range(10)} <= old
    assert "broken deploy" in master.stderr()
    assert not master.events("worker_exit")

    module.write_text("import time\ntime.sleep(30)\n")  # a replacement that never boots
    master.signal(signal.SIGHUP)
    failed = master.wait_event("reload_failed", count=2, timeout=10)[1]
    assert "missed boot_timeout" in failed["reason"]
    assert master.wait_workers(2) == old

    module.write_text("VERSION = 2\n")
    master.signal(signal.SIGHUP)
    done = master.wait_event("reload_done", timeout=10)[0]
    assert done["replaced"] == 2
    new = master.wait_ready(2)
    assert not new & old
    assert {pong(port)[2] for _ in range(10)} == {"2"}


def test_broker_reload_from_a_callback(start, sock):
    """``broker.reload()`` (the API, not the signal) through a worker's message."""
    port = sock.getsockname()[1]
    master = start(echo(sock, workers=1), pass_fds=[sock])
    old = master.wait_ready(1)
    assert ask(port, 'send {"ctl": "reload"}').startswith("ok")
    master.wait_event("reload_done")
    assert master.wait_ready(1) != old

"""`prefork serve --template --refork-after N` end to end: under a client loop, a warmed worker
forks the next template and the broker rolls onto it with no request failing; the new workers
are the master's children and carry the warmed worker's memory (the app's request counter
goes on from where that worker was); ctl status shows the reforks and each template's
standby; and the hostile cases: a worker that is not fork safe, one that never answers, one
killed before it answers, a promoted template killed before it is ready, and a SIGHUP during a
refork."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import MasterProcess, children, wait_until
from test_process_ctl import status

pytestmark = pytest.mark.timeout(90)

Start = Callable[..., MasterProcess]

APP = """\
import os, threading, time

SERVED = 0  # this process's requests, and those of the worker it was forked from
MODE = {mode!r}
BLOCKED = False
FORKS = 0  # forks since this process (or the one it copies) served


def before_fork():
    # In a worker asked to fork a template: deaf to the master for 3s, once.
    global BLOCKED
    if MODE == "block" and SERVED and not BLOCKED:
        BLOCKED = True
        time.sleep(3)


def after_fork_in_child():
    # The middle process of a worker's double fork, then the template it forks.
    global FORKS
    if SERVED:
        FORKS += 1
        if MODE == "die" and FORKS == 2:
            os._exit(3)


os.register_at_fork(before=before_fork, after_in_child=after_fork_in_child)


async def app(scope, receive, send):
    global SERVED
    if scope["type"] != "http":
        return
    SERVED += 1
    if MODE == "threads" and SERVED == 1:
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    body = f"{{os.getpid()}} {{SERVED}}".encode()
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": body}})
"""


def serve(
    start: Start, sock: socket.socket, tmp_path: Path, *options: str, mode: str = "plain"
) -> MasterProcess:
    (tmp_path / "refork_app.py").write_text(APP.format(mode=mode))
    control = tmp_path / "m.ctl"
    argv = [sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
    argv += ["--app-dir", str(tmp_path), "--template", "--control", str(control)]
    argv += ["-w", "2", *options, "refork_app:app"]
    master = start(argv, pass_fds=[sock])
    return master


def get(port: int) -> tuple[int, int] | None:
    """(the worker's pid, its SERVED) for one request on a new connection, or None."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        if response.status != 200:
            return None
        pid, served = response.read().split()
        return int(pid), int(served)
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


@contextmanager
def load(port: int) -> Iterator[dict[str, Any]]:
    """A client loop in a thread for the time of the block: counts answers and failures."""
    seen: dict[str, Any] = {"ok": 0, "failed": 0, "answers": []}
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            got = get(port)
            seen["ok" if got else "failed"] += 1
            if got:
                seen["answers"].append(got)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join(15)


def load_until(port: int, predicate: Callable[[], Any], timeout: float = 30.0) -> dict[str, Any]:
    with load(port) as seen:
        wait_until(predicate, timeout)
    return seen


def logged(master: MasterProcess, pattern: str) -> list[str]:
    return re.findall(pattern, master.stderr())


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_refork_under_load_fails_no_request_and_the_new_workers_carry_the_warm_memory(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, tmp_path, "--refork-after", "30,1000000")
    seen = load_until(port, lambda: "reload done" in master.stderr())
    assert seen["failed"] == 0 and seen["ok"] >= 30
    (promoted, served) = logged(master, r"worker \d+ \(pid (\d+)\) served (\d+) requests")[0]
    (template,) = logged(master, r"forked the template of generation 2 \(pid (\d+)\)")
    assert parent(int(template)) == master.pid
    # The workers of generation 2 answer from a counter that starts where the promoted
    # worker's was when it forked: its memory, not a fresh import.
    answers = [a for _ in range(10) if (a := get(port))]
    pids = {pid for pid, _ in answers}
    assert len(answers) == 10 and int(promoted) not in pids
    assert all(parent(pid) == master.pid for pid in pids)
    assert min(n for _, n in answers) > int(served)
    doc = wait_until(lambda: one_template(tmp_path / "m.ctl"), 15)
    assert doc["reforks"]["count"] == 1 and doc["reforks"]["next_after"] == 1_000_000
    (row,) = doc["templates"]
    assert (row["generation"], row["pid"]) == (2, int(template))
    assert row["promoted_from"] is not None
    standby = wait_until(
        lambda: status(tmp_path / "m.ctl")["brokers"]["http"]["templates"][0]["standby"]
    )
    assert standby in children(master.pid)
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0


def test_a_worker_that_runs_threads_is_not_fork_safe_and_nothing_changes(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, tmp_path, "--refork-after", "5", mode="threads")
    seen = load_until(port, lambda: len(logged(master, "refork rolled back")) >= 2)
    assert seen["failed"] == 0
    assert "not fork safe: 2 threads run" in master.stderr()
    # Each worker was asked once: no third attempt however long they serve.
    with load(port) as more:
        wait_until(lambda: more["ok"] >= 20, 15)
    assert len(logged(master, r"refork: worker")) == 2
    doc = status(tmp_path / "m.ctl")["brokers"]["http"]
    assert doc["reforks"]["count"] == 0 and doc["generation"] == 3
    assert [t["generation"] for t in doc["templates"]] == [1]


def test_a_worker_that_does_not_answer_in_time_rolls_back_and_its_late_template_is_killed(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    options = ("--refork-after", "10", "--boot-timeout", "1")
    master = serve(start, sock, tmp_path, *options, mode="block")
    seen = load_until(port, lambda: "did not fork the template within 1s" in master.stderr())
    assert seen["failed"] == 0
    # Its late answer: that template is killed; generation 1 serves on.
    wait_until(lambda: "forked the template of generation 2 too late" in master.stderr(), 15)
    wait_until(lambda: titled(master, "template gen 2") == [], 15)
    doc = status(tmp_path / "m.ctl")["brokers"]["http"]
    assert [t["generation"] for t in doc["templates"]] == [1] and doc["reforks"]["count"] == 0
    assert get(port) is not None


def test_a_worker_killed_before_it_answers_rolls_back(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, tmp_path, "--refork-after", "10", mode="block")
    pattern = r"refork: worker \d+ \(pid (\d+)\)"
    with load(port) as seen:
        (promoted,) = wait_until(lambda: logged(master, pattern), 30)
        os.kill(int(promoted), signal.SIGKILL)  # deaf in before_fork for 3s: nothing forked
        wait_until(lambda: "left before it forked the template" in master.stderr(), 15)
    assert "refork rolled back" in master.stderr()
    assert "forked the template of generation 2" not in master.stderr()
    assert seen["ok"] > 0 and get(port) is not None  # the other worker served meanwhile


def test_a_promoted_template_that_dies_before_it_is_ready_rolls_back(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, tmp_path, "--refork-after", "10", mode="die")
    seen = load_until(port, lambda: "refork rolled back" in master.stderr())
    assert seen["failed"] == 0
    doc = status(tmp_path / "m.ctl")["brokers"]["http"]
    assert doc["reforks"]["count"] == 0 and 1 in [t["generation"] for t in doc["templates"]]
    with load(port) as more:
        wait_until(lambda: more["ok"] >= 10, 15)
    assert more["failed"] == 0


def test_a_sighup_during_a_refork_wins_with_a_template_from_disk(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, tmp_path, "--refork-after", "10", mode="block")
    with load(port) as seen:
        wait_until(lambda: "refork: worker" in master.stderr(), 30)
        master.signal(signal.SIGHUP)  # the worker is deaf for 3s: the refork is running
        wait_until(lambda: "reload done" in master.stderr(), 30)
    assert seen["failed"] == 0
    assert re.search(r"template of generation 3 \(pid \d+\) is importing", master.stderr())
    wait_until(lambda: titled(master, "template gen 2") == [], 15)
    # The reload started the counts over: generation 3's workers refork again.
    with load(port):
        wait_until(lambda: len(logged(master, "refork: worker")) == 2, 30)
    assert "refork: worker" in master.stderr().split("reload done")[1]


def one_template(path: Path) -> dict[str, Any] | None:
    """The broker's status once one template is left (the old one is reaped)."""
    doc: dict[str, Any] = status(path)["brokers"]["http"]
    return doc if len(doc["templates"]) == 1 else None


def titled(master: MasterProcess, what: str) -> list[int]:
    found = []
    for pid in children(master.pid):
        try:
            if what.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found

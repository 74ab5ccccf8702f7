"""Nothing from outside kills the master: hostile control lines, worker frames and scrapes, and
a stop while operators' clients are connected. Real masters, real sockets; each test checks
the master still serves and answers ``prefork ctl status`` afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, MasterProcess, ask, listener, wait_until
from test_process_ctl import ctl, free_port, ops, scrape, status
from test_serve import Start

from prefork.core._frames import load_json

pytestmark = pytest.mark.timeout(60)


def api_master(start: Start, tmp_path: Path, **master: Any) -> tuple[MasterProcess, int, Path]:
    """An API master with one ``workers:Echo`` worker and a control socket; returns it, the
    Echo port and the socket's path once the worker is ready."""
    sock = listener()
    port = sock.getsockname()[1]
    path = tmp_path / "api.ctl"
    config = {
        "master": {"control": str(path), **master},
        "brokers": [
            {"type": "echo", "worker": "workers:Echo", "listen": [f"fd://{sock.fileno()}"]}
        ],
    }
    process = start(config, pass_fds=[sock])
    process.wait_ready(1, timeout=10)
    return process, port, path


def assert_clean_exit(master: MasterProcess, *files: Path) -> None:
    """Exit code 0, no traceback, and the pid file and control socket gone."""
    code = master.wait_exit(15)
    log = master.stderr()
    assert (code, "Traceback" in log) == (0, False), log[-3000:]
    assert [f.name for f in files if f.exists()] == []


def test_a_stop_with_operators_connected_exits_0_and_leaves_nothing(
    start: Start, tmp_path: Path
) -> None:
    """A ``ctl status --watch`` and a scraper half-way through its request are connected when
    SIGINT comes: the master closes them, removes its pid file and socket, and exits 0 (the
    side servers' peers were unregistered from a closed selector: KeyError, exit 1)."""
    mport = free_port()
    pidfile = tmp_path / "m.pid"
    master, _, path = ops(
        start, tmp_path, "--pid", str(pidfile), "--metrics-bind", f"127.0.0.1:{mport}"
    )
    watcher = subprocess.Popen(
        [sys.executable, "-m", "prefork", "ctl", "--control", str(path), "status", "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline()  # it is connected and has its first answer
        with socket.create_connection(("127.0.0.1", mport)) as scraper:
            scraper.sendall(b"GET /metrics HTTP/1.1\r\n")
            wait_until(lambda: "127.0.0.1" in scrape(mport), 5, "the endpoint answering others")
            master.signal(signal.SIGINT)
            assert_clean_exit(master, pidfile, path)
            assert scraper.recv(100) == b""  # closed by the master
        watcher.wait(10)
    finally:
        watcher.kill()
        watcher.wait()


def test_ctl_drain_then_ctl_stop(start: Start, tmp_path: Path) -> None:
    """The maintenance sequence an operator types: drain, then stop."""
    pidfile = tmp_path / "m.pid"
    master, _, path = ops(start, tmp_path, "--pid", str(pidfile))
    assert ctl(path, "drain").returncode == 0
    wait_until(lambda: status(path)["brokers"]["http"]["live"] == 0, 10, "drained")
    done = ctl(path, "stop")
    assert done.returncode == 0, done.stderr
    assert_clean_exit(master, pidfile, path)


def still_serving(master: MasterProcess, port: int, path: Path) -> None:
    master.check_running("the master to survive")
    assert ask(port).startswith("pong ")
    assert status(path)["brokers"]["echo"]["live"] == 1


@pytest.mark.parametrize(
    "line",
    [
        b"[" * 1000 + b"]" * 1000 + b"\n",
        b'{"v":1,"cmd":"status","x":' + b"9" * 4301 + b"}\n",
        b'{"v":1,"cmd":"status","x":' + b'{"a":' * 3000 + b"1" + b"}" * 3001 + b"\n",
    ],
    ids=["deep-array", "huge-integer", "deep-object"],
)
def test_a_hostile_control_line_is_refused_and_the_master_goes_on(
    start: Start, tmp_path: Path, line: bytes
) -> None:
    master, port, path = api_master(start, tmp_path)
    with socket.socket(socket.AF_UNIX) as peer:
        peer.settimeout(10)
        peer.connect(str(path))
        peer.sendall(line)
        answer = json.loads(peer.makefile("rb").readline())
    assert answer["ok"] is False
    assert answer["error"].startswith("a request is one JSON object per line (")
    still_serving(master, port, path)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"k":"hb","b":' + b"9" * 5000 + b"}",
        b'{"k":"hb","b":' + b"[" * 2000 + b"]" * 2000 + b"}",
    ],
    ids=["huge-integer", "deep-array"],
)
def test_a_hostile_worker_frame_replaces_the_worker_not_the_master(
    start: Start, tmp_path: Path, payload: bytes
) -> None:
    master, port, path = api_master(start, tmp_path)
    (first,) = master.ready_pids()
    frame = len(payload).to_bytes(4, "big") + payload
    assert ask(port, "raw " + frame.hex()).startswith("ok ")
    master.wait_event("worker_crash", pid=first, timeout=10)
    wait_until(lambda: master.ready_pids() - {first}, 10, "a replacement ready")
    assert "frame refused: JSON" in master.stderr()
    still_serving(master, port, path)


def hostile_json(rng: random.Random) -> bytes:
    depth = rng.choice([2, 63, 64, 65, 1000, 3000])
    return rng.choice(
        [
            b"[" * depth + b"]" * depth,
            b'{"a":' * depth + b"1" + b"}" * depth,
            b"9" * rng.choice([20, 4300, 4301, 6000]),
            b'"' + b"\\ud800" * depth + b'"',
            rng.randbytes(rng.randrange(1, 300)),
            json.dumps(
                {"name": "x" * depth, "type": "histogram", "labels": {"a": '"' * 199}}
            ).encode(),
        ]
    )


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def send_and_leave(family: int, address: Any, data: bytes, rng: random.Random) -> None:
    """Connect, send ``data`` in random pieces, and leave at once or after reading a little."""
    with socket.socket(family) as sock:
        sock.settimeout(5)
        sock.connect(address)
        with contextlib.suppress(OSError):
            while data:
                cut = rng.randrange(1, len(data) + 1)
                sock.sendall(data[:cut])
                data = data[cut:]
            if rng.random() < 0.5:  # a little of the answer, if it comes soon
                sock.settimeout(0.05)
                sock.recv(rng.choice([1, 100, 65536]))


def test_a_storm_of_hostile_input_on_every_side_at_once(start: Start, tmp_path: Path) -> None:
    """Control lines, scrapes and worker frames chosen by a seeded fuzzer, hundreds of them:
    the master still serves, answers ``ctl status``, logs no traceback, and its peak memory
    stays far below what one unbounded scrape or frame used to cost."""
    rng = random.Random(17)
    mport = free_port()
    master, port, path = api_master(start, tmp_path, metrics_bind=f"127.0.0.1:{mport}")
    for _ in range(300):
        target = rng.choice(["control", "metrics", "metrics", "frame"])
        if target == "control":
            line = rng.choice([hostile_json(rng), b'{"v":1,"cmd":"status"}']) + b"\n"
            send_and_leave(socket.AF_UNIX, str(path), line * rng.choice([1, 3]), rng)
        elif target == "metrics":
            head = rng.choice([b"GET /metrics HTTP/1.1\r\n\r\n", b"GET /", hostile_json(rng)])
            send_and_leave(socket.AF_INET, ("127.0.0.1", mport), head, rng)
        else:  # a frame the master takes (a report, a message), whatever is inside
            kind = rng.choice([b"report", b"msg"])
            body = rng.choice([hostile_json(rng), b'{"metrics":' + hostile_json(rng) + b"}"])
            payload = b'{"k":"' + kind + b'","b":' + body + b"}"
            frame = len(payload).to_bytes(4, "big") + payload
            if len(frame) < 30_000 and takes(payload):  # a bad frame replaces the worker
                assert ask(port, "raw " + frame.hex(), timeout=10).startswith("ok ")
    still_serving(master, port, path)
    assert scrape(mport).startswith("# HELP")
    assert "Traceback" not in master.stderr()
    peak = vm_hwm_mib(master.pid)
    assert peak < 100


def takes(payload: bytes) -> bool:
    """Whether the master's decoder takes ``payload`` (nested at most 64 deep)."""
    try:
        load_json(payload)
    except ValueError:
        return False
    return True

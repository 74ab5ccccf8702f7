"""The console's side of ``prefork ctl upgrade``, in one process: the request held while the
master checks the new code, refused or carried over; and everything the console hands the
next image of the master (its sockets, their peers, the metric totals, the times) taken over
by a second console as the new image's would. The exec is played by detaching the first
console's sockets: their fds stay open, with the same numbers, as an exec leaves them."""

from __future__ import annotations

import json
import os
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_console import FakeMaster, host, request
from test_control import client, pump, read_line

from prefork.config import MasterConfig
from prefork.core._events import Emit, Spawn
from prefork.core._payloads import WorkerInfo
from prefork.core._version import VERSION
from prefork.ops._console import UPGRADES, Console


@pytest.fixture
def selectors_() -> Iterator[Callable[[], selectors.DefaultSelector]]:
    made: list[selectors.DefaultSelector] = []

    def make() -> selectors.DefaultSelector:
        made.append(selectors.DefaultSelector())
        return made[-1]

    yield make
    for sel in made:
        sel.close()


def opened(
    tmp_path: Path,
    sel: selectors.BaseSelector,
    upgrade: Callable[[], str] | None = None,
    handover: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[Console, FakeMaster]:
    master = FakeMaster()
    config = MasterConfig(**{"control": str(tmp_path / "m.ctl"), **options})
    made = Console(config, master.posted.append, host())
    made.open(sel, master.status, {"http": []}, upgrade=upgrade, handover=handover)
    return made, master


def exec_(console: Console) -> dict[str, Any]:
    """What an exec does to the console: its state handed over (through JSON, as the master
    writes it); its sockets' fds left open, its objects gone."""
    socks: list[socket.socket] = []

    def carry(sock: socket.socket) -> int:
        socks.append(sock)
        return sock.fileno()

    doc = json.loads(json.dumps(console.export(carry)))
    for sock in socks:
        sock.detach()
    return doc


def test_an_upgrade_is_refused_with_the_masters_reason(
    tmp_path: Path, selectors_: Callable[[], selectors.DefaultSelector]
) -> None:
    sel = selectors_()
    made, _ = opened(tmp_path, sel, upgrade=lambda: "a reload is running")
    sock = client(tmp_path / "m.ctl")
    reply = request(sel, sock, cmd="upgrade", wait=True)
    assert reply == {"v": 1, "ok": False, "error": "a reload is running"}
    made.close()
    # a console the master gave no way to upgrade (as the tests' own consoles)
    other, _ = opened(tmp_path, sel)
    sock = client(tmp_path / "m.ctl")
    assert request(sel, sock, cmd="upgrade")["error"] == "this master cannot be upgraded in place"
    other.close()


def test_an_upgrade_under_way_holds_its_peer_until_the_master_says(
    tmp_path: Path, selectors_: Callable[[], selectors.DefaultSelector]
) -> None:
    sel = selectors_()
    asked: list[int] = []
    made, _ = opened(tmp_path, sel, upgrade=lambda: asked.append(1) or "")
    first = client(tmp_path / "m.ctl")
    first.sendall(b'{"v":1,"cmd":"upgrade","wait":true}\n{"v":1,"cmd":"status"}\n')
    pump(sel)
    second = client(tmp_path / "m.ctl")
    reply = request(sel, second, cmd="upgrade")
    assert reply == {"v": 1, "ok": False, "error": "an upgrade is under way already"}
    assert asked == [1]  # the master was asked once
    made.upgrade_refused("the installed prefork cannot start this master: boom")
    reply = read_line(sel, first)
    assert reply["error"] == "the installed prefork cannot start this master: boom"
    assert read_line(sel, first)["status"]["upgrades"] == 0  # the request after it goes on
    made.upgrade_refused("nobody asks")  # nothing held: nothing to answer
    made.close()


def test_the_next_image_takes_over_sockets_peers_totals_and_times(
    tmp_path: Path, selectors_: Callable[[], selectors.DefaultSelector]
) -> None:
    old_sel = selectors_()
    old, _ = opened(tmp_path, old_sel, upgrade=lambda: "", metrics_bind="127.0.0.1:0")
    info = WorkerInfo(1, 101, "http", 1)
    old.observe(Spawn(1, "http", 1))
    report = {
        "status": {"requests": 12, "connections": 1},
        "metrics": [{"name": "jobs_total", "type": "counter", "value": 5}],
    }
    old.observe(Emit("http", "worker_report", (report, info)))
    control_fd = old._control.listener.fileno()  # type: ignore[union-attr]
    idle = client(tmp_path / "m.ctl")
    idle.sendall(b'{"v":1,"cmd":"sta')  # half a request when the exec comes
    asker = client(tmp_path / "m.ctl")
    asker.sendall(b'{"v":1,"cmd":"upgrade","wait":true}\n')
    pump(old_sel)
    first_start = old.master_started
    doc = exec_(old)
    assert doc["upgrade"]["fd"] in {p["fd"] for p in doc["servers"]["control"]["peers"]}
    old_sel.close()

    sel = selectors_()
    time.sleep(0.01)  # the new image starts later: its own start time is after the first
    new, master = opened(
        tmp_path,
        sel,
        upgrade=lambda: "",
        handover=doc,
        metrics_bind="127.0.0.1:0",
        health_bind="127.0.0.1:0",  # not carried: bound anew
    )
    assert new._control.listener.fileno() == control_fd  # type: ignore[union-attr]
    idle.sendall(b'tus"}\n')
    status = read_line(sel, idle)["status"]
    assert (status["pid"], status["version"], status["upgrades"]) == (os.getpid(), VERSION, 1)
    assert status["master_started"] == round(first_start, 3) < status["started"]
    assert status["brokers"]["http"]["workers"][0]["requests"] == 12  # the last report
    text = "".join(new.render_metrics())
    assert 'prefork_worker_starts_total{broker="http"} 1' in text
    assert 'jobs_total{broker="http"} 5' in text
    assert f"{UPGRADES} 1" in text
    assert f'version="{VERSION}"' in text  # build info of the new image
    # the asker waits for the reload that follows, then hears what the upgrade did
    master.generation, master.last = (
        2,
        {
            "generation": 2,
            "result": "done",
            "reason": "",
            "replaced": 2,
            "duration": 0.5,
            "ago": 0.5,
        },
    )
    new.settle()
    reply = read_line(sel, asker)
    assert reply["ok"] is True and reply["reloads"][0]["replaced"] == 2
    upgrade = reply["upgrade"]
    assert (upgrade["pid"], upgrade["from"], upgrade["to"], upgrade["upgrades"]) == (
        os.getpid(),
        VERSION,
        VERSION,
        1,
    )
    assert 0 <= upgrade["took"] < 5
    new.close()
    assert not (tmp_path / "m.ctl").exists()  # the file is still ours: removed


def test_an_upgrade_without_wait_is_answered_once_the_new_image_runs(
    tmp_path: Path, selectors_: Callable[[], selectors.DefaultSelector]
) -> None:
    old_sel = selectors_()
    old, _ = opened(tmp_path, old_sel, upgrade=lambda: "")
    asker = client(tmp_path / "m.ctl")
    asker.sendall(b'{"v":1,"cmd":"upgrade"}\n')
    pump(old_sel)
    doc = exec_(old)
    old_sel.close()
    sel = selectors_()
    new, _ = opened(tmp_path, sel, handover=doc)
    reply = read_line(sel, asker)
    assert reply["ok"] is True and reply["upgrade"]["upgrades"] == 1
    assert "reloads" not in reply
    new.close()


def test_an_asker_gone_before_the_exec_is_not_carried(
    tmp_path: Path, selectors_: Callable[[], selectors.DefaultSelector]
) -> None:
    old_sel = selectors_()
    old, _ = opened(tmp_path, old_sel, upgrade=lambda: "")
    asker = client(tmp_path / "m.ctl")
    asker.sendall(b'{"v":1,"cmd":"upgrade","wait":true}\n')
    pump(old_sel)
    asker.close()
    pump(old_sel)
    doc = exec_(old)
    assert doc["upgrade"] is None
    old_sel.close()
    sel = selectors_()
    new, _ = opened(tmp_path, sel, handover=doc)
    assert new._waits == []
    new.close()


def test_an_asker_the_new_image_cannot_find_is_let_go(
    tmp_path: Path, selectors_: Callable[[], selectors.DefaultSelector]
) -> None:
    old_sel = selectors_()
    old, _ = opened(tmp_path, old_sel, upgrade=lambda: "")
    asker = client(tmp_path / "m.ctl")
    asker.sendall(b'{"v":1,"cmd":"upgrade","wait":true}\n')
    pump(old_sel)
    doc = exec_(old)
    old_sel.close()
    doc["upgrade"]["fd"] = -5
    sel = selectors_()
    new, _ = opened(tmp_path, sel, handover=doc)
    assert new._waits == []
    new.close()
    # a new image without a control socket answers nobody
    doc = {**doc, "servers": {}, "upgrade": {"fd": 3, "wait": True, "asked": 0, "from": "x"}}
    quiet, _ = opened(tmp_path, sel, handover=doc, control=None)
    assert quiet._waits == []
    quiet.close()


def test_a_scrape_being_written_is_not_carried(
    tmp_path: Path, selectors_: Callable[[], selectors.DefaultSelector]
) -> None:
    old_sel = selectors_()
    old, _ = opened(tmp_path, old_sel, metrics_bind="127.0.0.1:0")
    endpoint = old._endpoint
    assert endpoint is not None
    scraper = socket.create_connection(endpoint.listener.getsockname())
    other = socket.create_connection(endpoint.listener.getsockname())
    pump(old_sel)
    first, second = endpoint.peers.values()
    first.rest = iter([b"more"])  # an answer still being made piece by piece
    kept = second.sock.fileno()
    carried = exec_(old)["servers"]["metrics"]["peers"]
    assert [p["fd"] for p in carried] == [kept]
    scraper.close()
    other.close()


def test_an_answer_not_yet_written_goes_out_from_the_new_image(
    tmp_path: Path, selectors_: Callable[[], selectors.DefaultSelector]
) -> None:
    old_sel = selectors_()
    old, _ = opened(tmp_path, old_sel)
    reader = client(tmp_path / "m.ctl")
    pump(old_sel)
    assert old._control is not None
    (peer,) = old._control.peers.values()
    peer.output += b'{"v":1,"ok":true,"unsent":1}\n'  # what the socket had not taken yet
    doc = exec_(old)
    old_sel.close()
    sel = selectors_()
    new, _ = opened(tmp_path, sel, handover=doc)
    assert read_line(sel, reader) == {"v": 1, "ok": True, "unsent": 1}
    new.close()

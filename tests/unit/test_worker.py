"""The Worker base class and Broker callbacks, without a process around them."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from prefork import Broker, BrokerStatus, Master, Worker
from prefork.config import BrokerConfig
from prefork.core import _frames as frames
from prefork.core._events import DrainRequested, ReloadRequested, ResumeRequested, ScaleRequested
from prefork.master import _child
from prefork.master._child import load_worker_class


class Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[str, Any]] = []

    def send_frame(self, kind: str, body: Any = None) -> None:
        self.frames.append((kind, body))


def make_worker(cls: type[Worker] = Worker) -> tuple[Worker, Recorder]:
    link = Recorder()
    w = cls(type="web", id=3, generation=2, sockets=[], options={"a": 1}, channel=link, backlog=64)
    return w, link


def test_attributes_come_from_the_master() -> None:
    options = {"a": 1}
    w, _ = make_worker()
    assert (w.type, w.id, w.generation, w.sockets, w.backlog) == ("web", 3, 2, [], 64)
    assert w.options == options and w.options is not options  # a copy the worker may change


def test_the_defaults_do_nothing_and_send_nothing() -> None:
    w, link = make_worker()
    assert w.init() is None
    assert w.on_message({"x": 1}) is None
    Worker.check_options({"anything": object()})  # the base class accepts any options
    assert link.frames == []


def test_frames_sent_to_the_master() -> None:
    w, link = make_worker()
    w.ready()
    w.ready()  # once only
    w.send({"n": 1})
    w.report([1, 2])
    w.retire()
    assert link.frames == [
        (frames.READY, None),
        (frames.MESSAGE, {"n": 1}),
        (frames.REPORT, [1, 2]),
        (frames.RETIRE, None),
    ]


def test_shutdown_resolves_the_exit_code_once() -> None:
    async def scenario() -> int:
        w, _ = make_worker()
        w.shutdown(5)  # before the runtime set up the future: nothing to resolve
        w._exit = asyncio.get_running_loop().create_future()
        await w.prepare_for_shutdown()  # the default calls shutdown()
        w.shutdown(7)  # already resolved: ignored
        return await w._exit

    assert asyncio.run(scenario()) == 0


class Named(Worker):
    pass


def test_load_worker_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lw_workers.py").write_text(
        "from prefork import Worker\nclass W(Worker):\n    pass\nNotAWorker = object\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_worker_class(Named) is Named
    assert load_worker_class("lw_workers:W").__name__ == "W"
    with pytest.raises(TypeError, match=r"not a prefork\.Worker subclass"):
        load_worker_class("lw_workers:NotAWorker")
    with pytest.raises(AttributeError):
        load_worker_class("lw_workers:Missing")


def test_a_raising_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Master().broker("web", Named)
    seen: list[object] = []

    def boom(*args: object) -> None:
        raise RuntimeError("user bug")

    broker.on("worker_exit", boom)
    broker.on("worker_exit", seen.append)
    with caplog.at_level(logging.ERROR, logger="prefork.master"):
        broker.emit("worker_exit", ("payload",))
    assert seen == ["payload"]
    assert "worker_exit callback" in caplog.text and "user bug" in caplog.text


class RecordingDesk:
    """A master as a Broker sees it (``MasterDesk``), recording what the broker asks."""

    def __init__(self) -> None:
        self.posted: list[object] = []
        self.sent: list[tuple[str, Any]] = []

    def post(self, event: Any) -> None:
        self.posted.append(event)

    def status(self, broker: str) -> BrokerStatus:
        return BrokerStatus(
            desired=4,
            live=3,
            generation=2,
            draining=True,
            reloading=False,
            failures=0,
            backoff_until=0.0,
        )

    def send(self, broker: str, obj: Any) -> None:
        self.sent.append((broker, obj))


def test_a_broker_talks_to_its_master_only_through_the_desk() -> None:
    desk = RecordingDesk()
    broker = Broker(BrokerConfig(type="web", worker=Named, workers=2), desk)
    broker.reload()
    broker.drain()
    broker.resume()
    broker.scale(3)
    broker.send({"hello": 1})
    assert desk.posted == [
        ReloadRequested("web"),
        DrainRequested("web"),
        ResumeRequested("web"),
        ScaleRequested("web", workers=3),
    ]
    assert desk.sent == [("web", {"hello": 1})]
    assert (broker.workers, broker.draining, broker.status["live"]) == (4, True, 3)


def test_broker_commands_before_run_are_queued_and_send_reaches_nobody() -> None:
    master = Master()
    broker = master.broker("web", Named, workers=2)
    broker.reload()
    broker.scale(3)
    broker.send({"hello": 1})  # no worker yet: it is dropped, not queued for later
    assert list(master._pending) == [ReloadRequested("web"), ScaleRequested("web", workers=3)]
    with pytest.raises(TypeError):
        broker.send({"not json": object()})  # still checked, so a bug shows before run()
    assert broker.workers == 2 and broker.draining is False


def test_status_before_run_shows_the_configured_count() -> None:
    broker = Master().broker("web", Named, workers=2)
    assert broker.status == {
        "desired": 2,
        "live": 0,
        "generation": 1,
        "draining": False,
        "reloading": False,
        "failures": 0,
        "backoff_until": 0.0,
        "backoff": 0.0,
        "started": 0,
        "restarts": 0,
        "crashes": 0,
        "last_reload": None,
        "workers": [],
        "templates": [],
        "reforks": {"count": 0, "ago": None, "next_after": None},
    }


class StuckTransport:
    """A transport whose write buffer never drains (a master that does not read)."""

    def get_write_buffer_size(self) -> int:
        return 1


def test_a_leaving_worker_waits_a_second_at_most_for_its_frames_to_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    naps: list[float] = []

    async def nap(delay: float) -> None:
        naps.append(delay)

    monkeypatch.setattr(asyncio, "sleep", nap)
    link = _child._Link(1 << 20)
    link.transport = StuckTransport()  # type: ignore[assignment]
    asyncio.run(_child._flush(link))
    assert naps == [0.01] * 100

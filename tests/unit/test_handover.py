"""What one image of the master hands the next across ``prefork ctl upgrade``, in one process:
the supervisor's records to plain data (JSON, as the master writes them) and back, field by
field, and a supervisor that adopts them and carries on as the one before would have."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from test_supervisor import boot, effects, logs, make, notes, policy

from prefork.core import _frames as frames
from prefork.core import _handover
from prefork.core._events import (
    Kill,
    MessageReceived,
    ReloadRequested,
    ScaleRequested,
    Spawn,
    Terminate,
    TimePassed,
    TurnAway,
    WorkerSpawned,
)
from prefork.core._rolling import ReloadRecord, Swap
from prefork.core._roster import WorkerRecord, WorkerState
from prefork.core._supervisor import Supervisor


def through_json(doc: dict[str, Any]) -> Any:
    return json.loads(json.dumps(doc))


def busy_supervisor() -> Supervisor:
    """Two brokers mid-way through things: a reload waiting for its replacement, a worker
    stopping, a broker scaled to 0 (turned away), backoff and counters set."""
    sup = make(policy("web", workers=2, recycle_rate=600), policy("jobs", workers=1))
    boot(sup, 0.0)
    sup.handle(ReloadRequested("web"), 5.0)  # spawns worker 4 to replace worker 1
    sup.handle(WorkerSpawned(4, 104), 5.0)
    sup.handle(ScaleRequested("jobs", workers=0), 6.0)  # worker 3 stops; jobs is turned away
    web = sup.ledger.brokers["web"]
    web.failures, web.not_before, web.last_error = 2, 9.5, "boom"
    return sup


def test_every_field_of_every_record_goes_through_json_and_back() -> None:
    sup = busy_supervisor()
    doc = through_json(sup.export())
    again = make(policy("web", workers=2, recycle_rate=600), policy("jobs", workers=1))
    again.adopt(doc, 7.0)
    for name, b in sup.ledger.brokers.items():
        other = again.ledger.brokers[name]
        for f in dataclasses.fields(b):
            if f.name not in ("rolling", "templates"):
                assert getattr(other, f.name) == getattr(b, f.name), f.name
        # Templates are processes of the image before: the new one starts its own.
        assert not other.templates.by_generation
        for slot in type(b.rolling).__slots__:
            assert getattr(other.rolling, slot) == getattr(b.rolling, slot), slot
    heartbeats = {}
    for worker_id, w in sup.ledger.workers.items():
        other = again.ledger.workers[worker_id]
        heartbeats[worker_id] = other.heartbeat_at
        assert dataclasses.replace(other, heartbeat_at=w.heartbeat_at) == w
    # the master was not reading while it re-executed: the ready get a fresh window
    assert heartbeats == {1: 7.0, 2: 7.0, 3: 0.0, 4: 5.0}
    assert sup.ledger.workers[3].state is WorkerState.STOPPING
    assert sup.ledger.brokers["web"].rolling.swap == Swap(1, 4)
    assert list(sup.ledger.workers) == list(again.ledger.workers)
    assert (again.ledger.stopping, again.ledger.shutdown_at) == (False, None)


def test_the_adopted_supervisor_goes_on_where_the_other_was() -> None:
    sup = busy_supervisor()
    again = make(policy("web", workers=2, recycle_rate=600), policy("jobs", workers=1))
    actions = again.adopt(through_json(sup.export()), 7.0)
    # the broker scaled to 0 turns its connections away again (the listener is new to this
    # selector); nothing else: every worker is there
    assert effects(actions) == [TurnAway("jobs", on=True)]
    # the replacement the reload waited for becomes ready: the old worker is stopped, and
    # the next swap starts (ids go on from the last one: worker 5)
    ready = effects(again.handle(MessageReceived(4, frames.READY, None), 10.0))  # past backoff
    assert [Terminate(1, True), Spawn(5, "web", 2)] == [a for a in ready if not hasattr(a, "event")]
    # a stopping worker still has its kill deadline
    assert Kill(3) in again.handle(TimePassed(), 6.0 + 30.0)


def test_a_reload_after_the_adoption_replaces_every_worker_it_adopted() -> None:
    sup = make(policy("web", workers=2))
    boot(sup)
    again = make(policy("web", workers=2))
    assert effects(again.adopt(through_json(sup.export()), 3.0)) == []
    out = again.handle(ReloadRequested(), 3.0)
    assert notes(out)[0][0] == "RELOADING=1"
    assert effects(out) == [Spawn(3, "web", 2)]
    assert "reloading 2 worker(s)" in logs(out)


def test_a_broker_the_new_image_adds_starts_its_workers() -> None:
    sup = make(policy("web", workers=1))
    boot(sup)
    again = make(policy("web", workers=1), policy("new", workers=1))
    assert effects(again.adopt(through_json(sup.export()), 1.0)) == [Spawn(2, "new", 1)]


def test_fields_one_version_has_and_the_other_not() -> None:
    """A newer prefork may add a field (the reader takes its default) or drop one (the reader
    leaves it out): the records still go across."""
    doc = through_json(make(policy("web", workers=1)).export())
    worker = _handover.worker_doc(WorkerRecord(1, "web", 1, 0.0, pid=101))
    worker["colour"] = "blue"
    del worker["error"], worker["state"]
    doc["ledger"]["workers"] = [worker]
    doc["ledger"]["brokers"]["web"]["colour"] = "blue"
    doc["ledger"]["brokers"]["web"]["rolling"] = {}
    del doc["next_id"]
    again = make(policy("web", workers=1))
    again.adopt(doc, 0.0)
    adopted = again.ledger.workers[1]
    assert (adopted.pid, adopted.state, adopted.error) == (101, WorkerState.BOOTING, "")
    assert again.ledger.brokers["web"].rolling.reload is None


def test_a_reload_record_goes_across() -> None:
    sup = make(policy("web", workers=1))
    boot(sup)
    sup.ledger.brokers["web"].rolling.reload = ReloadRecord(2, 1.0, "failed", "why", 0, 2.0)
    again = make(policy("web", workers=1))
    again.adopt(through_json(sup.export()), 3.0)
    assert again.ledger.brokers["web"].rolling.reload == ReloadRecord(
        2, 1.0, "failed", "why", 0, 2.0
    )


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: d["ledger"]["brokers"].update(other={}), "no broker named 'other' here"),
        (lambda d: d["ledger"]["workers"][0].update(broker="gone"), "no broker named 'gone'"),
        (lambda d: d["ledger"]["workers"][0].update(pid="101"), "'101' is not int"),
        (lambda d: d["ledger"]["workers"][0].update(state="dancing"), "'dancing' is not a valid"),
        (lambda d: d["ledger"]["brokers"]["web"].update(desired="2"), "desired is str, not int"),
        (lambda d: d["ledger"]["brokers"]["web"].update(not_before="soon"), "not_before is str"),
        (lambda d: d["ledger"]["brokers"]["web"]["rolling"].update(queue=["1"]), "'1' is not int"),
        (lambda d: d["ledger"].update(stopping=1), "1 is not bool"),
        (lambda d: d["ledger"].pop("workers"), "KeyError: 'workers'"),
        (lambda d: d.update(next_id=True), "True is not a whole number"),
        (lambda d: d["ledger"]["workers"].append(7), "do not fit"),
    ],
)
def test_records_that_do_not_fit_are_refused(change: Any, error: str) -> None:
    sup = make(policy("web", workers=2))
    boot(sup)
    doc = through_json(sup.export())
    change(doc)
    with pytest.raises(ValueError, match=error):
        make(policy("web", workers=2)).adopt(doc, 1.0)

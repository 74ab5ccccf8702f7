"""The pieces the supervisor holds, each alone: a broker's rolling replacement, the ledger of
records, the memory watch. (How they act together: tests/unit/test_supervisor.py.)"""

from __future__ import annotations

import logging

from prefork.config import BrokerConfig, MasterConfig, policy_of
from prefork.core._events import Action, Emit, Log, MeasureMemory
from prefork.core._ledger import Ledger
from prefork.core._memory import MemoryWatch
from prefork.core._payloads import ReloadResult, WorkerInfo
from prefork.core._rolling import Rolling, Swap
from prefork.core._roster import BrokerPolicy, WorkerRecord, WorkerState


def policy(name: str = "web", **options: object) -> BrokerPolicy:
    options = {"template": "off", **options}  # (the default, auto, forks from templates)
    return policy_of(BrokerConfig.from_options(name, "m:W", options), MasterConfig())


# --- the rolling replacement ---------------------------------------------------------------


def test_a_reload_swaps_one_worker_at_a_time_and_ends_done() -> None:
    rolling, out = Rolling("web"), list[Action]()
    rolling.start_reload(2, 10.0, [1, 2])
    spawned = iter([3, 4])
    rolling.advance(10.0, lambda: next(spawned), out)
    assert rolling.swap == Swap(1, 3) and rolling.queue == [2] and rolling.standing_in
    assert rolling.busy == {1, 3} and rolling.waiting_for == 3
    rolling.advance(10.1, lambda: next(spawned), out)  # one swap at a time
    assert rolling.swap == Swap(1, 3)
    assert rolling.ready(3, out) == 1  # the old one to stop
    rolling.advance(11.0, lambda: next(spawned), out)
    assert rolling.swap == Swap(2, 4)
    rolling.left(2)  # the old one left by itself: nothing to stop when 4 is ready
    assert rolling.busy == {4} and not rolling.standing_in
    assert rolling.ready(4, out) is None
    rolling.advance(12.0, lambda: next(spawned), out)
    assert out == [
        Log(logging.DEBUG, "[web] worker 1 replaced by worker 3, 1 to go"),
        Log(logging.INFO, "[web] reload done: 2 worker(s) replaced"),
        Emit("web", "reload_done", (ReloadResult("web", 2, 2, "", 2.0),)),
    ]
    assert rolling.reload is not None and rolling.reload.result == "done"
    assert not rolling.reloading and rolling.waiting_for is None


def test_a_failed_replacement_rolls_the_reload_back_and_keeps_the_old_workers() -> None:
    rolling, out = Rolling("web"), list[Action]()
    rolling.start_reload(2, 0.0, [1, 2])
    rolling.advance(0.0, lambda: 3, out)
    rolling.failed(1, "not the one waited for", 0.5, out)  # an old worker: nothing ends
    assert out == [] and rolling.swap == Swap(1, 3)
    rolling.failed(3, "worker 3 could not start", 1.0, out)
    assert rolling.queue == [] and rolling.swap is None and not rolling.reloading
    assert out == [
        Log(logging.ERROR, "[web] reload rolled back: worker 3 could not start"),
        Emit("web", "reload_failed", (ReloadResult("web", 2, 0, "worker 3 could not start", 1.0),)),
    ]


def test_a_recycle_that_fails_is_no_reload() -> None:
    rolling, out = Rolling("web"), list[Action]()
    assert rolling.enqueue(1) and not rolling.enqueue(1)
    rolling.advance(0.0, None, out)  # held back (backoff): nothing starts
    assert rolling.swap is None
    rolling.advance(0.0, lambda: 2, out)
    assert not rolling.enqueue(1) and not rolling.enqueue(2)  # being swapped
    rolling.failed(2, "it crashed", 1.0, out)
    assert out == [Log(logging.ERROR, "[web] replacement failed: it crashed")]
    assert rolling.reload is None


def test_a_drain_drops_the_queue_and_ends_the_reload() -> None:
    rolling, out = Rolling("web"), list[Action]()
    rolling.start_reload(2, 0.0, [1])
    rolling.advance(0.0, lambda: 2, out)
    rolling.drop(3.0, out, "drain requested")
    assert rolling.queue == [] and rolling.swap is None
    assert out == [
        Emit("web", "reload_failed", (ReloadResult("web", 2, 0, "drain requested", 3.0),))
    ]
    rolling.drop(4.0, out, "again")  # no reload: nothing more
    assert len(out) == 1


def test_a_newer_reload_starts_over() -> None:
    rolling, out = Rolling("web"), list[Action]()
    rolling.start_reload(2, 0.0, [1, 2])
    rolling.advance(0.0, lambda: 3, out)
    assert rolling.waiting_for == 3  # the supervisor stops it: the newer reload wins
    rolling.start_reload(3, 1.0, [1, 2])
    assert rolling.swap is None and rolling.queue == [1, 2] and rolling.replaced == 0
    assert rolling.reload is not None and rolling.reload.generation == 3


# --- the ledger ---------------------------------------------------------------------------


def test_the_ledger_answers_from_its_records() -> None:
    ledger = Ledger()
    ledger.add_broker(policy("web", workers=2, timeout=30.0))
    ledger.add_broker(policy("jobs", workers=1))
    ready = WorkerRecord(1, "web", 1, 0.0, pid=101, state=WorkerState.READY, heartbeat_at=5.0)
    booting = WorkerRecord(2, "web", 1, 1.0)
    ledger.workers = {1: ready, 2: booting}
    assert ledger.live("web") == [ready, booting] and ledger.ready_count("web") == 1
    assert ledger.reachable("web") == [WorkerInfo(1, 101, "web", 1)]  # 2 has no pid yet
    assert not ledger.all_ready()
    assert ledger.next_deadline() == 35.0  # the heartbeat deadline comes before the boot's
    assert [b.policy.name for b in ledger.select(None)] == ["web", "jobs"]
    assert ledger.wants_spawn(ledger.brokers["jobs"])
    ledger.stopping = True
    assert not ledger.wants_spawn(ledger.brokers["jobs"])
    status = ledger.status(10.0)
    assert (status["web"]["live"], status["jobs"]["live"]) == (2, 0)
    assert not ledger.reloading()


# --- the memory watch ---------------------------------------------------------------------


def test_the_memory_watch_measures_ready_workers_and_names_those_over_the_limit() -> None:
    ledger = Ledger()
    ledger.add_broker(policy("web", max_worker_memory=100))
    ledger.add_broker(policy("jobs"))
    watch = MemoryWatch(interval=1.0, grace=5.0)
    watch.start([ledger.brokers["jobs"]], 0.0)
    assert watch.next_at is None  # no limit: never measured
    watch.start(ledger.brokers.values(), 0.0)
    old = WorkerRecord(1, "web", 1, 0.0, pid=11, state=WorkerState.READY, ready_at=0.0)
    young = WorkerRecord(2, "web", 1, 0.0, pid=12, state=WorkerState.READY, ready_at=8.0)
    job = WorkerRecord(3, "jobs", 1, 0.0, pid=13, state=WorkerState.READY, ready_at=0.0)
    ledger.workers = {1: old, 2: young, 3: job}
    assert watch.due(ledger.workers.values(), ledger.brokers, 0.5) is None
    assert watch.due(ledger.workers.values(), ledger.brokers, 1.0) == MeasureMemory((1, 2))
    assert watch.next_at == 2.0
    mib = 1 << 20
    over = list(
        watch.over([(1, 200 * mib), (2, 200 * mib), (9, 1)], ledger.workers, ledger.brokers, 10.0)
    )
    assert over == [
        (
            old,
            "[web] worker 1 (pid 11) uses 200 MiB, over max_worker_memory (100 MiB): replacing it",
        )
    ]  # 2 has served under the grace; 9 is gone

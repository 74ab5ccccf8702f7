"""The supervisor's account of itself, event by event: the status rows, the counts of starts,
restarts and crashes, the latest reload, why each worker left, and memory recycling."""

from __future__ import annotations

import logging

from test_supervisor import boot, effects, emits, logs, make, policy, ready

from prefork.core import _frames as frames
from prefork.core._events import (
    ChannelBroken,
    DrainRequested,
    Log,
    MeasureMemory,
    MemoryMeasured,
    MessageReceived,
    ReloadRequested,
    ScaleRequested,
    Spawn,
    Started,
    StopRequested,
    Terminate,
    TimePassed,
    WorkerExited,
    WorkerSpawned,
)
from prefork.core._payloads import ReloadResult, WorkerExit

MIB = 1 << 20


def causes(out: list[object], event: str) -> list[str]:
    return [args[0].cause for args in emits(out, event)]  # type: ignore[attr-defined, index]


def test_status_has_a_row_per_worker_with_its_state_and_uptime() -> None:
    sup = make()
    sup.handle(Started(), 0.0)
    sup.handle(WorkerSpawned(1, 101), 0.0)
    ready(sup, 2, 1.0)
    web = sup.status(10.0)["web"]
    assert web["workers"] == [
        {
            "id": 1,
            "pid": 101,
            "generation": 1,
            "state": "booting",
            "uptime": 10.0,
            "requests": None,
            "connections": None,
            "rss": None,
        },
        {
            "id": 2,
            "pid": 102,
            "generation": 1,
            "state": "ready",
            "uptime": 10.0,
            "requests": None,
            "connections": None,
            "rss": None,
        },
    ]
    assert (web["started"], web["restarts"], web["crashes"]) == (2, 0, 0)
    assert web["last_reload"] is None and web["backoff"] == 0.0


def test_a_stopping_worker_shows_as_stopping_and_leaves_the_live_count() -> None:
    sup = make()
    boot(sup)
    sup.handle(ScaleRequested("web", workers=1), 1.0)
    web = sup.status(2.0)["web"]
    assert [row["state"] for row in web["workers"]] == ["ready", "stopping"]
    assert web["live"] == 1 and web["desired"] == 1


def test_a_crash_counts_and_its_replacement_is_a_restart() -> None:
    sup = make()
    boot(sup)
    out = sup.handle(WorkerExited(1, None, 9), 5.0)
    assert Spawn(3, "web", 1) in out
    web = sup.status(5.0)["web"]
    assert (web["started"], web["restarts"], web["crashes"]) == (3, 1, 1)


def test_a_scale_up_is_not_a_restart_and_a_scale_down_forgives_owed_ones() -> None:
    sup = make(policy("web", workers=2, backoff_base=1.0))
    boot(sup)
    sup.handle(WorkerExited(1, 1, None), 0.5)  # early: replaced at once
    sup.handle(WorkerExited(3, 1, None), 0.6)  # again: backoff, nothing spawned yet
    assert sup.status(0.6)["web"]["backoff"] > 0
    sup.handle(ScaleRequested("web", workers=1), 0.7)  # the one left meets the count
    sup.handle(ScaleRequested("web", workers=2), 0.8)
    sup.handle(TimePassed(), 5.0)
    web = sup.status(5.0)["web"]
    assert (web["crashes"], web["restarts"]) == (2, 1)  # the scale-up's worker is no restart


def test_the_latest_reload_is_recorded_while_it_runs_and_when_done() -> None:
    sup = make()
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)
    last = sup.status(10.5)["web"]["last_reload"]
    assert last == {
        "generation": 2,
        "result": "running",
        "reason": "",
        "replaced": 0,
        "duration": 0.5,
        "ago": 0.5,
    }
    ready(sup, 3, 11.0)
    ready(sup, 4, 12.5)
    last = sup.status(20.0)["web"]["last_reload"]
    assert last is not None
    assert (last["result"], last["replaced"], last["duration"], last["ago"]) == (
        "done",
        2,
        2.5,
        10.0,
    )
    assert sup.status(20.0)["web"]["restarts"] == 2


def test_a_rolled_back_reload_is_recorded_with_its_reason() -> None:
    sup = make()
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)
    out = sup.handle(WorkerExited(3, 1, None), 11.0)
    (args,) = emits(out, "reload_failed")
    assert args == (
        ReloadResult("web", 2, 0, "worker 3 exited with code 1 before it was ready", 1.0),
    )
    last = sup.status(12.0)["web"]["last_reload"]
    assert last is not None and last["result"] == "failed"
    assert last["reason"] == "worker 3 exited with code 1 before it was ready"


def test_exits_say_why_the_master_asked() -> None:
    sup = make()
    boot(sup)
    sup.handle(ReloadRequested(), 1.0)
    ready(sup, 3, 2.0)  # 1 is asked to leave: replaced
    assert causes(sup.handle(WorkerExited(1, 0, None), 2.5), "worker_exit") == ["replaced"]
    ready(sup, 4, 3.0)  # 2 too; the reload is done
    assert causes(sup.handle(WorkerExited(2, 0, None), 3.5), "worker_exit") == ["replaced"]
    sup.handle(ScaleRequested("web", workers=1), 4.0)  # the youngest, 4, leaves
    assert causes(sup.handle(WorkerExited(4, 0, None), 4.5), "worker_exit") == ["scale_down"]
    sup.handle(DrainRequested(), 5.0)
    sup.handle(TimePassed(), 100.0)  # 3 overstays its graceful timeout: killed
    out = sup.handle(WorkerExited(3, None, 9), 100.5)
    assert causes(out, "worker_exit") == ["graceful_timeout"]


def test_a_drain_gives_the_cause_drain() -> None:
    sup = make()
    boot(sup)
    sup.handle(DrainRequested(), 1.0)
    assert causes(sup.handle(WorkerExited(1, 0, None), 1.5), "worker_exit") == ["drain"]


def test_stop_gives_the_cause_stop() -> None:
    sup = make()
    boot(sup)
    sup.handle(StopRequested(), 1.0)
    assert causes(sup.handle(WorkerExited(1, 0, None), 1.5), "worker_exit") == ["stop"]
    sup.handle(StopRequested(), 2.0)  # the second: killed at once
    assert causes(sup.handle(WorkerExited(2, None, 9), 2.5), "worker_exit") == ["stop"]


def crash_cause(*steps: object, exit_code: int | None = None, signal: int | None = 9) -> list[str]:
    """The cause of worker 1's crash, after ``steps`` (events, or times for TimePassed)."""
    sup = make(policy("web", workers=1, timeout=3.0, boot_timeout=5.0))
    sup.handle(Started(), 0.0)
    sup.handle(WorkerSpawned(1, 101), 0.0)
    for step in steps:
        sup.handle(
            TimePassed() if isinstance(step, float) else step,
            0.0 if not isinstance(step, float) else step,
        )  # type: ignore[arg-type]
    return causes(sup.handle(WorkerExited(1, exit_code, signal), 50.0), "worker_crash")


def test_crashes_say_what_happened() -> None:
    is_ready = MessageReceived(1, frames.READY, None)
    assert crash_cause(is_ready, exit_code=3, signal=None) == ["exit"]
    assert crash_cause(is_ready) == ["signal"]
    assert crash_cause(6.0) == ["boot_timeout"]
    assert crash_cause(MessageReceived(1, frames.FAILED, "Traceback"), exit_code=1) == [
        "start_failed"
    ]
    assert crash_cause(is_ready, ChannelBroken(1, "too big")) == ["bad_frame"]
    assert crash_cause(is_ready, 3.5, 5.0) == ["hung"]


def test_an_exit_payload_carries_its_cause() -> None:
    sup = make()
    boot(sup)
    out = sup.handle(WorkerExited(1, 0, None), 4.0)
    assert emits(out, "worker_crash") == [(WorkerExit(1, 101, "web", 1, 0, None, 4.0, "exit"),)]


# --- memory --------------------------------------------------------------------------------


def memory_sup(**options: float) -> tuple[object, list[int]]:
    sup = make(policy("web", workers=2, timeout=0, max_worker_memory=100.0, **options))
    return sup, boot(sup)


def test_no_memory_limit_no_measuring() -> None:
    sup = make(policy("web", workers=1, timeout=0))
    boot(sup)
    assert sup.next_deadline() is None


def test_workers_are_measured_every_interval_once_ready() -> None:
    sup = make(policy("web", workers=2, timeout=0, max_worker_memory=100.0))
    sup.handle(Started(), 0.0)
    assert sup.next_deadline() == 1.0
    assert not [a for a in sup.handle(TimePassed(), 1.0) if isinstance(a, MeasureMemory)]
    ready(sup, 1, 1.5)
    ready(sup, 2, 1.5)
    out = sup.handle(TimePassed(), 2.0)
    assert MeasureMemory((1, 2)) in out
    assert sup.next_deadline() == 3.0


def test_a_worker_over_the_limit_is_replaced_through_the_rolling_path() -> None:
    sup = make(policy("web", workers=2, timeout=0, max_worker_memory=100.0))
    boot(sup)
    out = sup.handle(MemoryMeasured(((1, 150 * MIB), (2, 50 * MIB))), 10.0)
    assert effects(out) == [Spawn(3, "web", 1)]
    assert "worker 1 (pid 101) uses 150 MiB, over max_worker_memory (100 MiB)" in logs(out)
    assert [a.level for a in out if isinstance(a, Log)] == [logging.WARNING]
    # measured again while its replacement boots: not queued twice, not logged twice
    assert sup.handle(MemoryMeasured(((1, 160 * MIB),)), 11.0) == []
    out = ready(sup, 3, 12.0)
    assert causes(sup.handle(WorkerExited(1, 0, None), 13.0), "worker_exit") == ["replaced"]
    assert Terminate(1, replaced=True) in out


def test_a_fresh_worker_over_the_limit_serves_its_grace_first() -> None:
    sup = make(policy("web", workers=1, timeout=0, max_worker_memory=100.0))
    boot(sup, 0.0)
    assert sup.handle(MemoryMeasured(((1, 200 * MIB),)), 4.9) == []  # ready 4.9 s: grace is 5
    assert effects(sup.handle(MemoryMeasured(((1, 200 * MIB),)), 5.0)) == [Spawn(2, "web", 1)]


def test_measurements_of_unknown_booting_or_stopping_workers_are_ignored() -> None:
    sup = make(policy("web", workers=2, timeout=0, max_worker_memory=100.0))
    boot(sup)
    sup.handle(ScaleRequested("web", workers=1), 10.0)  # 2 stops
    sup.handle(ScaleRequested("web", workers=2), 10.0)  # 3 boots
    big = 500 * MIB
    assert sup.handle(MemoryMeasured(((99, big), (2, big), (3, big))), 20.0) == []


def test_no_measuring_while_stopping() -> None:
    sup = make(policy("web", workers=1, timeout=0, max_worker_memory=100.0))
    boot(sup)
    sup.handle(StopRequested(), 0.5)
    assert sup.next_deadline() != 1.0
    assert not [a for a in sup.handle(TimePassed(), 1.0) if isinstance(a, MeasureMemory)]

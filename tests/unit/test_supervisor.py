"""The supervisor, event by event: no processes, no clocks, just events in and actions out."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from prefork.config import BrokerConfig, MasterConfig, policy_of
from prefork.core import _exits
from prefork.core import _frames as frames
from prefork.core._events import (
    Action,
    ChannelBroken,
    DrainRequested,
    DumpStack,
    Emit,
    Exit,
    Kill,
    Log,
    MessageReceived,
    Notify,
    ReloadRequested,
    ResumeRequested,
    ScaleRequested,
    Spawn,
    SpawnFailed,
    Started,
    StopRequested,
    Terminate,
    TimePassed,
    TurnAway,
    WorkerExited,
    WorkerSpawned,
)
from prefork.core._payloads import ReloadResult, WorkerExit, WorkerInfo
from prefork.core._roster import MAX_WORKERS, BrokerPolicy, Expiry, WorkerRecord, WorkerState, due
from prefork.core._supervisor import Supervisor

MASTER_OPTIONS = ("backoff_base", "backoff_cap", "backoff_reset")


def policy(name: str, **options: Any) -> BrokerPolicy:
    """A broker's policy as the master builds it, from the declared defaults and ``options``."""
    master = {k: options.pop(k) for k in MASTER_OPTIONS if k in options}
    jitter = options.pop("recycle_jitter", None)
    options.setdefault("template", "off")  # a test of templates says so (the default: auto)
    made = policy_of(BrokerConfig(type=name, worker="app:W", **options), MasterConfig(**master))
    return made if jitter is None else dataclasses.replace(made, recycle_jitter=jitter)


def make(*policies: BrokerPolicy, random: float = 1.0) -> Supervisor:
    return Supervisor(policies or [policy("web", workers=2)], random=lambda: random)


def effects(actions: list[Action]) -> list[Action]:
    """The actions without log lines and systemd notifications, which tests check separately."""
    return [a for a in actions if not isinstance(a, Log | Notify)]


def notes(actions: list[Action]) -> list[tuple[str, ...]]:
    return [a.fields for a in actions if isinstance(a, Notify)]


def logs(actions: list[Action]) -> str:
    return "\n".join(a.message for a in actions if isinstance(a, Log))


def emits(actions: list[Action], event: str) -> list[tuple[object, ...]]:
    return [a.args for a in actions if isinstance(a, Emit) and a.event == event]


def boot(sup: Supervisor, now: float = 0.0) -> list[int]:
    """Start, give every spawned worker pid 100+id, and make it ready. Returns the ids."""
    ids = [a.worker_id for a in sup.handle(Started(), now) if isinstance(a, Spawn)]
    for i in ids:
        sup.handle(WorkerSpawned(i, 100 + i), now)
        sup.handle(MessageReceived(i, frames.READY, None), now)
    return ids


def ready(sup: Supervisor, worker_id: int, now: float) -> list[Action]:
    sup.handle(WorkerSpawned(worker_id, 100 + worker_id), now)
    return sup.handle(MessageReceived(worker_id, frames.READY, None), now)


def test_start_spawns_the_desired_count_of_each_broker() -> None:
    sup = make(policy("web", workers=2), policy("jobs", workers=1))
    assert sup.handle(Started(), 0.0) == [
        Spawn(1, "web", 1),
        Spawn(2, "web", 1),
        Spawn(3, "jobs", 1),
    ]


def test_nothing_is_spawned_before_start() -> None:
    sup = make()
    assert sup.handle(ScaleRequested("web", workers=3), 0.0) == [
        Log(logging.INFO, "[web] scaled to 3 worker(s)")
    ]
    assert sup.handle(Started(), 0.0) == [
        Spawn(1, "web", 1),
        Spawn(2, "web", 1),
        Spawn(3, "web", 1),
    ]


def test_ready_worker_is_announced_with_its_pid() -> None:
    sup = make()
    sup.handle(Started(), 0.0)
    sup.handle(WorkerSpawned(1, 501), 0.0)
    out = sup.handle(MessageReceived(1, frames.READY, None), 0.5)
    assert effects(out) == [Emit("web", "worker_ready", (WorkerInfo(1, 501, "web", 1),))]
    assert logs(out) == "[web] worker 1 (pid 501, generation 1) is ready"
    assert sup.handle(MessageReceived(1, frames.READY, None), 0.6) == []  # once only


def test_a_crash_is_reported_once_and_replaced_at_once() -> None:
    sup = make()
    boot(sup)
    out = sup.handle(WorkerExited(1, None, 9), 30.0)
    assert effects(out) == [
        Emit("web", "worker_crash", (WorkerExit(1, 101, "web", 1, None, 9, 30.0, "signal"),)),
        Spawn(3, "web", 1),
    ]
    assert "worker 1 (pid 101) exited with signal 9" in logs(out)


def test_exit_code_zero_nobody_asked_for_is_a_crash() -> None:
    sup = make()
    boot(sup)
    out = sup.handle(WorkerExited(2, 0, None), 50.0)
    assert emits(out, "worker_crash") == [(WorkerExit(2, 102, "web", 1, 0, None, 50.0, "exit"),)]
    assert emits(out, "worker_exit") == []


def test_exit_the_master_asked_for_is_worker_exit_even_with_a_bad_code() -> None:
    sup = make()
    boot(sup)
    (stop,) = effects(sup.handle(ScaleRequested("web", workers=1), 1.0))
    assert isinstance(stop, Terminate)
    i = stop.worker_id
    out = sup.handle(WorkerExited(i, 3, None), 2.0)
    assert effects(out) == [
        Emit("web", "worker_exit", (WorkerExit(i, 100 + i, "web", 1, 3, None, 2.0, "scale_down"),))
    ]


def test_unknown_worker_events_are_ignored() -> None:
    sup = make()
    boot(sup)
    assert sup.handle(WorkerExited(99, 0, None), 1.0) == []
    assert sup.handle(MessageReceived(99, frames.MESSAGE, "x"), 1.0) == []
    assert sup.handle(ChannelBroken(99, "bad"), 1.0) == []
    assert sup.handle(WorkerSpawned(99, 5), 1.0) == []


# --- crash loops ---------------------------------------------------------------------------


def test_backoff_grows_exponentially_is_capped_and_never_forks_in_a_tight_loop() -> None:
    sup = make(policy("web", workers=1, backoff_base=0.5, backoff_cap=3.0))
    sup.handle(Started(), 0.0)
    ready(sup, 1, 0.0)  # it served once: failures go through the backoff
    waits = []
    worker, now = 1, 0.0
    for _ in range(6):
        out = sup.handle(WorkerExited(worker, 1, None), now)  # dies (soon after ready)
        spawns = [a for a in out if isinstance(a, Spawn)]
        if spawns:
            waits.append(0.0)
        else:
            deadline = sup.next_deadline()
            assert deadline is not None
            waits.append(deadline - now)
            assert sup.handle(TimePassed(), deadline - 0.01) == []  # not a moment early
            now = deadline
            spawns = [a for a in sup.handle(TimePassed(), now) if isinstance(a, Spawn)]
        assert len(spawns) == 1
        worker = spawns[0].worker_id
    assert waits == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert sup.status(0.0)["web"]["failures"] == 6


def test_backoff_has_jitter() -> None:
    sup = make(policy("web", workers=1, backoff_base=1.0), random=0.0)
    sup.handle(Started(), 0.0)
    ready(sup, 1, 0.0)  # it served once: failures go through the backoff
    sup.handle(WorkerExited(1, 1, None), 0.0)
    out = sup.handle(WorkerExited(2, 1, None), 0.0)
    assert sup.next_deadline() == 0.5  # half of 1.0 with the lowest jitter
    assert "2 failed starts in a row: backing off, next start in 0.50s" in logs(out)


def test_backoff_resets_after_stable_uptime() -> None:
    sup = make(policy("web", workers=1, backoff_reset=10.0))
    sup.handle(Started(), 0.0)
    ready(sup, 1, 0.0)  # it served once: failures go through the backoff
    sup.handle(WorkerExited(1, 1, None), 0.0)  # failure 1: retried at once
    sup.handle(WorkerExited(2, 1, None), 0.1)  # failure 2: waits
    assert sup.status(0.0)["web"]["failures"] == 2
    now = sup.next_deadline()
    assert now is not None
    (spawn,) = [a for a in sup.handle(TimePassed(), now) if isinstance(a, Spawn)]
    ready(sup, spawn.worker_id, now)
    out = sup.handle(WorkerExited(spawn.worker_id, None, 9), now + 60)  # stable, then crashed
    assert [a for a in out if isinstance(a, Spawn)] == [Spawn(4, "web", 1)]
    assert sup.status(0.0)["web"]["failures"] == 0


def test_crash_soon_after_ready_counts_towards_backoff() -> None:
    sup = make(policy("web", workers=1, backoff_reset=10.0))
    boot(sup)
    sup.handle(WorkerExited(1, 1, None), 2.0)
    assert sup.status(0.0)["web"]["failures"] == 1


def test_spawn_failure_counts_as_a_boot_failure() -> None:
    sup = make(policy("web", workers=1))
    sup.handle(Started(), 0.0)
    out = sup.handle(SpawnFailed(1, "Resource temporarily unavailable"), 0.0)
    assert "could not start worker 1: Resource temporarily unavailable" in logs(out)
    assert [a for a in out if isinstance(a, Spawn)] == [Spawn(2, "web", 1)]
    out = sup.handle(SpawnFailed(2, "again"), 0.0)
    assert [a for a in out if isinstance(a, Spawn)] == []


# --- rolling reload ------------------------------------------------------------------------


def test_reload_replaces_one_at_a_time_new_before_old() -> None:
    sup = make()
    boot(sup)
    assert effects(sup.handle(ReloadRequested(), 10.0)) == [Spawn(3, "web", 2)]
    # capacity is N+1: nothing is stopped until the replacement is ready
    out = ready(sup, 3, 11.0)
    assert effects(out) == [
        Emit("web", "worker_ready", (WorkerInfo(3, 103, "web", 2),)),
        Terminate(1, replaced=True),
        Spawn(4, "web", 2),
    ]
    assert emits(sup.handle(WorkerExited(1, 0, None), 11.5), "worker_exit")
    out = ready(sup, 4, 12.0)
    assert effects(out) == [
        Emit("web", "worker_ready", (WorkerInfo(4, 104, "web", 2),)),
        Terminate(2, replaced=True),
        Emit("web", "reload_done", (ReloadResult("web", 2, 2, duration=2.0),)),
    ]
    assert sup.status(0.0)["web"]["reloading"] is False


def debug_lines(actions: list[Action]) -> list[str]:
    return [a.message for a in actions if isinstance(a, Log) and a.level == logging.DEBUG]


def test_debug_lines_tell_each_start_and_each_step_of_a_reload() -> None:
    sup = make()
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)
    out = sup.handle(WorkerSpawned(3, 103), 10.1)
    assert out == [Log(logging.DEBUG, "[web] worker 3 (pid 103, generation 2) started")]
    out = sup.handle(MessageReceived(3, frames.READY, None), 11.0)
    assert debug_lines(out) == ["[web] worker 1 replaced by worker 3, 1 to go"]
    assert "[web] worker 3 (pid 103, generation 2) is ready" in logs(out)  # INFO, as before
    sup.handle(WorkerExited(1, 0, None), 11.5)  # INFO: left as asked
    assert debug_lines(ready(sup, 4, 12.0)) == ["[web] worker 2 replaced by worker 4, 0 to go"]


def test_reload_rolls_back_when_a_replacement_crashes() -> None:
    sup = make()
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)
    out = sup.handle(WorkerExited(3, 1, None), 10.5)
    assert emits(out, "reload_failed") == [
        (ReloadResult("web", 2, 0, "worker 3 exited with code 1 before it was ready", 0.5),)
    ]
    assert not [a for a in out if isinstance(a, Terminate | Kill)]  # old ones keep serving
    assert "reload rolled back" in logs(out)
    assert sup.status(0.0)["web"]["live"] == 2


def test_reload_rolls_back_when_a_replacement_misses_boot_timeout() -> None:
    sup = make(policy("web", workers=2, boot_timeout=5.0))
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)
    sup.handle(WorkerSpawned(3, 103), 10.0)
    assert sup.next_deadline() == 15.0
    assert effects(sup.handle(TimePassed(), 15.0)) == [Kill(3)]
    out = sup.handle(WorkerExited(3, None, 9), 15.01)
    (args,) = emits(out, "reload_failed")
    assert args[0].reason == "worker 3 missed boot_timeout (5s) before it was ready"
    assert emits(out, "worker_crash")


def test_reload_rollback_after_some_were_replaced_keeps_everything_running() -> None:
    sup = make(policy("web", workers=3))
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)
    ready(sup, 4, 11.0)  # replaces 1, spawns 5
    out = sup.handle(WorkerExited(5, 1, None), 11.5)
    (args,) = emits(out, "reload_failed")
    assert args[0].replaced == 1
    assert sup.status(0.0)["web"]["live"] == 3  # 2, 3 (old) and 4 (new)


def test_the_reload_after_a_rolled_back_one_waits_for_real_deadlines_only() -> None:
    # The rollback's failure left not_before at 10.5; while the next reload's swap waits for
    # its worker, that past time must not be a deadline (the master would spin on it).
    sup = make(policy("web", workers=2, boot_timeout=5.0))
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)
    sup.handle(WorkerExited(3, 1, None), 10.5)  # a syntax error: rolled back
    sup.handle(ReloadRequested(), 20.0)  # fixed: spawns 4 to replace 1
    assert sup.next_deadline() == 25.0  # 4's boot_timeout
    ready(sup, 4, 21.0)  # 1 stops, 5 replaces 2
    assert sup.next_deadline() == 21.0 + 5.0


def test_old_worker_crash_during_reload_is_replaced_and_the_reload_goes_on() -> None:
    sup = make()
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)  # spawns 3 to replace 1
    out = sup.handle(WorkerExited(2, None, 9), 10.2)  # 2 was queued; it crashes
    assert emits(out, "worker_crash")
    assert [a for a in out if isinstance(a, Spawn)] == [Spawn(4, "web", 2)]
    out = sup.handle(WorkerExited(1, None, 9), 10.3)  # the one being replaced crashes too
    assert [a for a in out if isinstance(a, Spawn)] == []  # 3 already stands in for it
    out = ready(sup, 3, 11.0)
    assert not [a for a in out if isinstance(a, Terminate)]
    assert emits(out, "reload_done") == [(ReloadResult("web", 2, 1, duration=1.0),)]


def test_sighup_during_reload_restarts_it_with_the_newest_code() -> None:
    sup = make()
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)  # spawn 3 (generation 2)
    out = sup.handle(ReloadRequested(), 10.5)
    assert effects(out) == [Kill(3), Spawn(4, "web", 3)]
    assert emits(sup.handle(WorkerExited(3, None, 9), 10.6), "worker_exit")
    out = ready(sup, 4, 11.0)
    assert Terminate(1, replaced=True) in out


def test_sigterm_during_reload_drains_and_reports_the_reload_failed() -> None:
    sup = make()
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)  # spawn 3
    out = sup.handle(DrainRequested(), 10.5)
    assert effects(out) == [
        TurnAway("web", on=True),
        Emit("web", "reload_failed", (ReloadResult("web", 2, 0, "drain requested", 0.5),)),
        Terminate(1),
        Terminate(2),
        Kill(3),
    ]
    assert sup.status(0.0)["web"]["draining"]


def test_reload_while_draining_is_ignored() -> None:
    sup = make()
    boot(sup)
    sup.handle(DrainRequested(), 1.0)
    out = sup.handle(ReloadRequested(), 2.0)
    assert effects(out) == []
    assert "reload ignored" in logs(out)


# --- drain, resume, stop, scale ------------------------------------------------------------


def test_drain_then_resume() -> None:
    sup = make(policy("web", workers=2, graceful_timeout=5.0))
    boot(sup)
    assert effects(sup.handle(DrainRequested(), 1.0)) == [
        TurnAway("web", on=True),
        Terminate(1),
        Terminate(2),
    ]
    out = sup.handle(WorkerExited(1, 0, None), 2.0)
    assert effects(out) == [
        Emit("web", "worker_exit", (WorkerExit(1, 101, "web", 1, 0, None, 2.0, "drain"),))
    ]
    sup.handle(WorkerExited(2, 0, None), 2.0)
    assert sup.next_deadline() is None  # drained: nothing to wait for, no exit either
    assert effects(sup.handle(ResumeRequested(), 3.0)) == [
        TurnAway("web", on=False),
        Spawn(3, "web", 1),
        Spawn(4, "web", 1),
    ]
    assert effects(sup.handle(ResumeRequested(), 3.5)) == []  # not drained: nothing to do
    assert not sup.status(0.0)["web"]["draining"]


def test_graceful_timeout_then_kill() -> None:
    sup = make(policy("web", workers=1, graceful_timeout=5.0))
    boot(sup)
    sup.handle(DrainRequested(), 1.0)
    assert sup.next_deadline() == 6.0
    out = sup.handle(TimePassed(), 6.0)
    assert effects(out) == [Kill(1)]
    assert "did not leave within graceful_timeout (5s)" in logs(out)
    assert sup.next_deadline() is None
    assert emits(sup.handle(WorkerExited(1, None, 9), 6.1), "worker_exit")


def test_booting_workers_are_killed_on_drain() -> None:
    sup = make(policy("web", workers=1))
    sup.handle(Started(), 0.0)
    assert effects(sup.handle(DrainRequested(), 0.5)) == [TurnAway("web", on=True), Kill(1)]
    assert emits(sup.handle(WorkerExited(1, None, 9), 0.6), "worker_exit")


def test_stop_drains_then_exits_zero_and_a_second_stop_kills() -> None:
    sup = make()
    boot(sup)
    assert effects(sup.handle(StopRequested(), 1.0)) == [
        TurnAway("web", on=True),
        Terminate(1),
        Terminate(2),
    ]
    assert effects(sup.handle(StopRequested(), 1.5)) == [Kill(1), Kill(2)]
    sup.handle(WorkerExited(1, None, 9), 1.6)
    out = sup.handle(WorkerExited(2, None, 9), 1.6)
    assert out[-1] == Exit(0)
    assert sup.handle(TimePassed(), 2.0) == []  # exits once


def test_stop_with_no_workers_exits_at_once() -> None:
    sup = make(policy("web", workers=0))
    # With no worker to take them, its connections are turned away from the start.
    assert effects(sup.handle(Started(), 0.0)) == [TurnAway("web", on=True)]
    assert effects(sup.handle(StopRequested(), 1.0)) == [Exit(0)]


def test_reload_during_stop_is_ignored() -> None:
    sup = make()
    boot(sup)
    sup.handle(StopRequested(), 1.0)
    assert effects(sup.handle(ReloadRequested(), 1.1)) == []


def test_scale_up_and_down_by_signal() -> None:
    sup = make(policy("web", workers=2), policy("jobs", workers=1))
    boot(sup)
    assert effects(sup.handle(ScaleRequested(delta=1), 1.0)) == [
        Spawn(4, "web", 1),
        Spawn(5, "jobs", 1),
    ]
    ready(sup, 4, 1.5)
    ready(sup, 5, 1.5)
    out = effects(sup.handle(ScaleRequested(delta=-1), 2.0))
    assert out == [Terminate(4), Terminate(5)]  # the youngest go first
    out = effects(sup.handle(ScaleRequested(delta=-1), 3.0))
    assert out == [Terminate(2)]  # web: 2 -> 1; jobs stays at its floor of 1
    assert sup.status(0.0)["web"]["desired"] == 1 and sup.status(0.0)["jobs"]["desired"] == 1


def test_a_storm_of_sigttin_stops_at_max_workers() -> None:
    sup = make(policy("web", workers=MAX_WORKERS - 1))
    sup.handle(ScaleRequested(delta=1), 1.0)
    out = sup.handle(ScaleRequested(delta=1), 1.1)
    assert out == [Log(logging.INFO, f"[web] scaled to {MAX_WORKERS} worker(s) (the most)")]
    assert sup.status(0.0)["web"]["desired"] == MAX_WORKERS


def test_scale_down_stops_booting_workers_first() -> None:
    sup = make(policy("web", workers=1))
    boot(sup)
    sup.handle(ScaleRequested("web", workers=2), 1.0)  # spawns 2, still booting
    assert effects(sup.handle(ScaleRequested("web", workers=1), 1.1)) == [Kill(2)]


def test_scale_to_zero_turns_connections_away_as_a_drain_does() -> None:
    """Nobody would take them: clients must get an answer, not wait in the queue."""
    sup = make(policy("web", workers=1))
    boot(sup)
    assert effects(sup.handle(ScaleRequested("web", workers=0), 1.0)) == [
        TurnAway("web", on=True),
        Terminate(1),
    ]
    assert effects(sup.handle(ScaleRequested("web", workers=0), 1.1)) == []  # no change
    out = effects(sup.handle(ScaleRequested("web", workers=1), 2.0))
    assert out == [TurnAway("web", on=False), Spawn(2, "web", 1)]
    # Scaled to 0 while draining: a resume keeps turning them away until the count is up.
    sup.handle(DrainRequested("web"), 3.0)
    sup.handle(ScaleRequested("web", workers=0), 3.1)
    assert effects(sup.handle(ResumeRequested("web"), 3.2)) == []
    assert effects(sup.handle(ScaleRequested(delta=1), 3.3)) == [
        TurnAway("web", on=False),
        Spawn(3, "web", 1),
    ]


# --- heartbeats, recycling, messages --------------------------------------------------------


def test_hung_worker_is_dumped_then_killed_then_replaced() -> None:
    sup = make(policy("web", workers=1, timeout=10.0))
    boot(sup)
    sup.handle(MessageReceived(1, frames.HEARTBEAT, None), 5.0)
    assert sup.next_deadline() == 15.0
    assert sup.handle(TimePassed(), 14.9) == []
    out = sup.handle(TimePassed(), 15.0)
    assert effects(out) == [DumpStack(1)]
    assert "is hung" in logs(out)
    assert sup.next_deadline() == 16.0  # the dump gets a moment to reach the log
    assert effects(sup.handle(TimePassed(), 16.0)) == [Kill(1)]
    out = sup.handle(WorkerExited(1, None, 9), 16.01)
    assert emits(out, "worker_crash")
    assert "sent no heartbeat for 10s" in logs(out)
    assert [a for a in out if isinstance(a, Spawn)] == [Spawn(2, "web", 1)]


def test_timeout_zero_turns_heartbeat_checks_off() -> None:
    sup = make(policy("web", workers=1, timeout=0))
    boot(sup)
    assert sup.next_deadline() is None


def test_recycle_replaces_workers_one_at_a_time_with_jitter() -> None:
    sup = make(
        policy("web", workers=2, timeout=0, recycle_rate=100.0, recycle_jitter=0.1),
        random=0.5,
    )
    boot(sup)
    assert sup.next_deadline() == 95.0  # 100 * (1 - 0.1 * 0.5)
    out = sup.handle(TimePassed(), 95.0)
    assert effects(out) == [Spawn(3, "web", 1)]  # only one replacement at a time
    out = ready(sup, 3, 96.0)
    assert Terminate(1, replaced=True) in out and Spawn(4, "web", 1) in out
    out = ready(sup, 4, 97.0)
    assert Terminate(2, replaced=True) in out
    assert not emits(out, "reload_done")


def test_a_failed_recycle_replacement_keeps_the_old_worker() -> None:
    sup = make(policy("web", workers=1, timeout=0, recycle_rate=100.0))
    boot(sup)
    sup.handle(TimePassed(), 100.0)  # spawn 2 to replace 1
    out = sup.handle(WorkerExited(2, 1, None), 100.5)
    assert "replacement failed" in logs(out)
    assert not [a for a in out if isinstance(a, Terminate | Kill | Spawn)]


def test_retire_goes_through_the_rolling_path_once() -> None:
    sup = make(policy("web", workers=2))
    boot(sup)
    assert effects(sup.handle(MessageReceived(1, frames.RETIRE, None), 5.0)) == [Spawn(3, "web", 1)]
    assert effects(sup.handle(MessageReceived(1, frames.RETIRE, None), 5.1)) == []
    assert effects(sup.handle(MessageReceived(2, frames.RETIRE, None), 5.2)) == []  # queued
    assert Terminate(1, replaced=True) in ready(sup, 3, 6.0)


def test_messages_and_reports_reach_callbacks() -> None:
    sup = make()
    boot(sup)
    info = WorkerInfo(1, 101, "web", 1)
    assert sup.handle(MessageReceived(1, frames.MESSAGE, {"n": 1}), 1.0) == [
        Emit("web", "worker_message", ({"n": 1}, info))
    ]
    assert sup.handle(MessageReceived(1, frames.REPORT, [1]), 1.0) == [
        Emit("web", "worker_report", ([1], info))
    ]
    assert sup.ledger.reachable("web") == [info, WorkerInfo(2, 102, "web", 1)]


def test_a_bad_frame_gets_the_worker_killed_and_replaced() -> None:
    sup = make(policy("web", workers=1))
    boot(sup)
    out = sup.handle(ChannelBroken(1, "frame of 9999999 bytes is over the limit"), 3.0)
    assert effects(out) == [Kill(1)]
    assert sup.handle(ChannelBroken(1, "again"), 3.1) == []
    out = sup.handle(WorkerExited(1, None, 9), 3.2)
    assert emits(out, "worker_crash")
    assert "sent a bad frame" in logs(out)
    assert Spawn(2, "web", 1) in out


def test_a_killed_worker_is_killed_only_once() -> None:
    sup = make(policy("web", workers=1, boot_timeout=5.0))
    sup.handle(Started(), 0.0)
    assert sup.handle(TimePassed(), 4.0) == []  # still within boot_timeout
    assert effects(sup.handle(TimePassed(), 5.0)) == [Kill(1)]
    assert sup.handle(TimePassed(), 9.0) == []  # killed, not reaped yet: no second Kill
    assert effects(sup.handle(DrainRequested(), 9.1)) == [TurnAway("web", on=True)]
    sup.handle(StopRequested(), 9.2)
    assert effects(sup.handle(StopRequested(), 9.3)) == []


def test_nothing_happens_before_the_graceful_deadline() -> None:
    sup = make(policy("web", workers=1, graceful_timeout=5.0))
    boot(sup)
    sup.handle(DrainRequested(), 1.0)
    assert sup.handle(TimePassed(), 3.0) == []


def test_scale_down_during_a_reload_takes_queued_workers_out_of_the_queue() -> None:
    sup = make(policy("web", workers=3))
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)  # replacing 1 with 4; 2 and 3 queued
    out = effects(sup.handle(ScaleRequested("web", workers=1), 10.5))
    assert out == [Terminate(3), Terminate(2)]
    out = ready(sup, 4, 11.0)
    assert Terminate(1, replaced=True) in out
    assert emits(out, "reload_done") == [(ReloadResult("web", 2, 1, duration=1.0),)]


def test_backoff_deadline_is_dropped_by_a_drain() -> None:
    sup = make(policy("web", workers=1, timeout=0))
    sup.handle(Started(), 0.0)
    ready(sup, 1, 0.0)  # it served once: failures go through the backoff
    sup.handle(WorkerExited(1, 1, None), 0.0)
    sup.handle(WorkerExited(2, 1, None), 0.0)
    assert sup.next_deadline() is not None
    sup.handle(DrainRequested(), 0.1)
    assert sup.next_deadline() is None


def test_all_ready_counts_ready_workers_and_ignores_draining_brokers() -> None:
    sup = make(policy("web", workers=2), policy("jobs", workers=1))
    sup.handle(Started(), 0.0)
    assert not sup.ledger.all_ready()
    ready(sup, 1, 1.0)
    ready(sup, 2, 1.0)
    assert not sup.ledger.all_ready()  # jobs is still booting
    sup.handle(DrainRequested("jobs"), 1.5)
    assert sup.ledger.all_ready()
    assert not sup.ledger.reloading()
    sup.handle(ReloadRequested("web"), 2.0)
    assert sup.ledger.reloading()


def test_backoff_count_resets_after_a_stable_stretch_without_failures() -> None:
    sup = make(policy("web", workers=1, timeout=0, backoff_reset=10.0))
    sup.handle(Started(), 0.0)
    ready(sup, 1, 0.0)  # it served once: failures go through the backoff
    sup.handle(WorkerExited(1, 1, None), 0.0)  # failure 1: retried at once (worker 2)
    sup.handle(WorkerExited(2, 1, None), 0.1)  # failure 2: waits
    now = sup.next_deadline()
    assert now is not None
    (spawn,) = [a for a in sup.handle(TimePassed(), now) if isinstance(a, Spawn)]
    ready(sup, spawn.worker_id, now)
    # Long after, one more boot fails (a scale-up, say): it is a first failure again.
    sup.handle(ScaleRequested("web", workers=2), now + 100)
    out = sup.handle(WorkerExited(spawn.worker_id + 1, 1, None), now + 100.5)
    assert [a for a in out if isinstance(a, Spawn)] == [Spawn(spawn.worker_id + 2, "web", 1)]
    assert sup.status(0.0)["web"]["failures"] == 1


def test_systemd_hears_ready_reloading_ready_stopping() -> None:
    sup = make(policy("web", workers=2), policy("jobs", workers=1))
    assert notes(sup.handle(Started(), 0.0)) == []
    ready(sup, 1, 1.0)
    assert notes(ready(sup, 2, 1.0)) == []  # jobs is not ready yet
    assert notes(ready(sup, 3, 1.5)) == [("READY=1", "STATUS=serving: web x2, jobs x1")]
    assert notes(sup.handle(MessageReceived(1, frames.HEARTBEAT, None), 2.0)) == []  # once
    out = sup.handle(ReloadRequested(), 10.25)
    assert notes(out) == [("RELOADING=1", "MONOTONIC_USEC=10250000")]
    assert notes(ready(sup, 4, 11.0)) == []  # web and jobs are still being replaced
    ready(sup, 5, 11.5)
    assert notes(ready(sup, 6, 12.0)) == [("READY=1", "STATUS=serving: web x2, jobs x1")]
    assert notes(sup.handle(ReloadRequested("web"), 13.0)) == []  # the API's reload: no news
    assert notes(sup.handle(StopRequested(), 14.0)) == [("STOPPING=1",)]
    assert notes(sup.handle(ReloadRequested(), 14.5)) == []
    assert notes(sup.handle(StopRequested(), 15.0)) == []


def test_heartbeat_interval_is_a_third_of_timeout_or_none() -> None:
    sup = make(policy("web", timeout=30.0), policy("jobs", timeout=0))
    assert sup.ledger.brokers["web"].policy.heartbeat_interval == 10.0
    assert sup.ledger.brokers["jobs"].policy.heartbeat_interval == 0.0


# --- worker states and their one deadline function ------------------------------------------


def test_due_reads_each_states_deadline() -> None:
    p = policy("web", timeout=10.0, boot_timeout=5.0)
    w = WorkerRecord(1, "web", 1, started=100.0, heartbeat_at=100.0)
    assert due(w, p) == (105.0, Expiry.BOOT_TIMEOUT)
    w.state, w.heartbeat_at = WorkerState.READY, 103.0
    assert due(w, p) == (113.0, Expiry.HUNG)
    w.retire_at = 110.0
    assert due(w, p) == (110.0, Expiry.RECYCLE)
    assert due(w, dataclasses.replace(p, timeout=0)) == (110.0, Expiry.RECYCLE)
    w.retire_at = None
    assert due(w, dataclasses.replace(p, timeout=0)) is None
    w.state, w.kill_at = WorkerState.STOPPING, 140.0
    assert due(w, p) == (140.0, Expiry.KILL)
    w.state = WorkerState.HUNG
    assert due(w, p) == (140.0, Expiry.KILL)
    w.state = WorkerState.KILLED
    assert due(w, p) is None


def test_next_deadline_and_the_timer_agree_for_every_state() -> None:
    """Whatever next_deadline() names, TimePassed at that moment acts, and not a moment before."""
    sup = make(policy("web", workers=2, timeout=10.0, recycle_rate=100.0), random=0.0)
    boot(sup)
    sup.handle(DrainRequested("web"), 1.0)  # both STOPPING: kill at 31
    acted = []
    now = 1.0
    while (deadline := sup.next_deadline()) is not None:
        assert effects(sup.handle(TimePassed(), deadline - 0.001)) == []
        out = effects(sup.handle(TimePassed(), deadline))
        assert out, f"nothing happened at the deadline {deadline}"
        acted += out
        now = deadline
    assert acted == [Kill(1), Kill(2)] and now == 31.0


def test_a_hung_worker_that_is_stopped_is_killed_at_once() -> None:
    sup = make(policy("web", workers=1, timeout=10.0))
    boot(sup)
    assert effects(sup.handle(TimePassed(), 10.0)) == [DumpStack(1)]
    assert effects(sup.handle(DrainRequested(), 10.5)) == [TurnAway("web", on=True), Kill(1)]
    assert emits(sup.handle(WorkerExited(1, None, 9), 10.6), "worker_exit")


def test_ready_from_a_worker_already_killed_is_ignored() -> None:
    sup = make(policy("web", workers=1, boot_timeout=5.0))
    sup.handle(Started(), 0.0)
    sup.handle(WorkerSpawned(1, 101), 0.0)
    assert effects(sup.handle(TimePassed(), 5.0)) == [Kill(1)]
    assert sup.handle(MessageReceived(1, frames.READY, None), 5.01) == []
    assert sup.status(0.0)["web"]["live"] == 1  # still counted until reaped: no extra spawn
    out = sup.handle(WorkerExited(1, None, 9), 5.02)
    assert "missed boot_timeout (5s) before it was ready" in logs(out)


def test_hung_and_recycle_due_together_are_both_handled() -> None:
    sup = make(policy("web", workers=1, timeout=10.0, recycle_rate=5.0), random=0.0)
    boot(sup)
    out = effects(sup.handle(TimePassed(), 20.0))  # recycle was due at 5, heartbeat at 10
    assert out == [DumpStack(1), Spawn(2, "web", 1)]


def test_a_worker_killed_at_the_graceful_timeout_is_not_logged_as_leaving_as_asked() -> None:
    sup = make(policy("web", workers=1, graceful_timeout=5.0))
    boot(sup)
    sup.handle(DrainRequested(), 1.0)
    sup.handle(TimePassed(), 6.0)
    out = sup.handle(WorkerExited(1, None, 9), 6.1)
    assert "did not leave within graceful_timeout (5s): killed" in logs(out)
    assert "left as asked" not in logs(out)
    assert emits(out, "worker_exit")  # still an exit the master asked for, not a crash


def test_a_master_that_overslept_gives_every_ready_worker_a_fresh_window() -> None:
    sup = make(policy("web", workers=2, timeout=10.0))
    boot(sup)
    out = sup.handle(TimePassed(overslept=30.0), 40.0)  # paused from 10 to 40
    assert effects(out) == []
    assert "the master was not running for 30.0s" in logs(out)
    assert sup.next_deadline() == 50.0
    assert effects(sup.handle(TimePassed(overslept=0.5), 50.5)) == [DumpStack(1), DumpStack(2)]


# --- workers killed from outside after they were ready --------------------------------------


def test_a_kill_storm_never_leaves_the_broker_without_ready_workers() -> None:
    """kill -9 of a ready worker every 200 ms for a minute (the OOM killer does this): each is
    replaced at once, never held back by the crash-loop backoff."""
    sup = make(policy("web", workers=4, timeout=0), random=0.5)
    booting: dict[int, float] = {}  # worker id -> when it reports ready (50 ms to boot)

    def perform(out: list[Action], now: float) -> None:
        for a in out:
            if isinstance(a, Spawn):
                sup.handle(WorkerSpawned(a.worker_id, 1000 + a.worker_id), now)
                booting[a.worker_id] = now + 0.05

    ready_ids: list[int] = []
    perform(sup.handle(Started(), 0.0), 0.0)
    now, fewest = 0.0, 4
    while now < 60.0:
        now = round(now + 0.05, 2)
        for i, at in list(booting.items()):
            if at <= now:
                del booting[i]
                sup.handle(MessageReceived(i, frames.READY, None), now)
                ready_ids.append(i)
        if (deadline := sup.next_deadline()) is not None and deadline <= now:
            perform(sup.handle(TimePassed(), now), now)
        if now >= 1.0 and round(now * 100) % 20 == 0:  # every 200 ms, the oldest ready one
            victim = ready_ids.pop(0)
            perform(sup.handle(WorkerExited(victim, None, 9), now), now)
            fewest = min(fewest, len(ready_ids))
    assert fewest >= 2  # of 4: a storm faster than 4 kills/s is slowed, never let through
    assert sup.status(0.0)["web"]["failures"] == 0


def test_replacements_of_killed_workers_are_rate_capped() -> None:
    sup = make(policy("web", workers=1))
    boot(sup)
    worker, now, waits = 1, 5.0, []
    for _ in range(6):  # killed as soon as it is ready, again and again
        out = sup.handle(WorkerExited(worker, None, 9), now)
        spawns = [a for a in out if isinstance(a, Spawn)]
        if not spawns:
            assert "workers are being killed fast; next start in 1.00s" in logs(out)
            deadline = sup.next_deadline()
            assert deadline is not None
            waits.append(deadline - now)
            now = deadline
            spawns = [a for a in sup.handle(TimePassed(), now) if isinstance(a, Spawn)]
        else:
            waits.append(0.0)
        (spawn,) = spawns
        worker = spawn.worker_id
        ready(sup, worker, now)
    assert waits == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]  # a burst of two, then one a second
    assert sup.status(0.0)["web"]["failures"] == 0  # never counted as a crash loop


def test_a_worker_that_exits_non_zero_right_after_ready_counts_towards_backoff() -> None:
    sup = make(policy("web", workers=1, backoff_reset=10.0))
    boot(sup)
    sup.handle(WorkerExited(1, 3, None), 1.0)
    assert sup.status(0.0)["web"]["failures"] == 1


# --- the first start: fail fast ---------------------------------------------------------------

TRACEBACK = 'Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named "x"\n'


def test_a_first_start_that_fails_stops_the_master_with_code_3_and_one_error_block() -> None:
    sup = make(policy("web", workers=2), policy("jobs", workers=1))
    sup.handle(Started(), 0.0)
    for i in (1, 2, 3):
        sup.handle(WorkerSpawned(i, 100 + i), 0.0)
    ready(sup, 3, 0.5)  # jobs is fine
    sup.handle(MessageReceived(1, frames.FAILED, TRACEBACK), 0.6)
    out = sup.handle(WorkerExited(1, 1, None), 0.7)
    assert f"[web] worker 1 could not start:\n{TRACEBACK.rstrip()}" in logs(out)
    assert "no web worker could start (could not start); stopping the master (exit code 3)" in (
        logs(out)
    )
    assert effects(out)[1:] == [  # [0] is the worker_crash event
        TurnAway("web", on=True),
        Kill(2),
        TurnAway("jobs", on=True),
        Terminate(3),
    ]
    assert [a for a in out if isinstance(a, Spawn)] == []
    sup.handle(MessageReceived(2, frames.FAILED, TRACEBACK), 0.71)
    out = sup.handle(WorkerExited(2, 1, None), 0.72)
    assert "[web] worker 2: the same error again" in logs(out)
    assert TRACEBACK.rstrip() not in logs(out)  # printed once
    out = sup.handle(WorkerExited(3, 0, None), 0.8)
    assert out[-1] == Exit(3)


def test_once_a_broker_has_served_a_failed_start_goes_through_the_backoff() -> None:
    sup = make(policy("web", workers=1))
    boot(sup)
    sup.handle(ReloadRequested(), 1.0)  # worker 2 boots the new code, which is broken
    sup.handle(MessageReceived(2, frames.FAILED, TRACEBACK), 1.5)
    out = sup.handle(WorkerExited(2, 1, None), 1.6)
    assert "could not start:\n" in logs(out) and "reload rolled back" in logs(out)
    assert not [a for a in out if isinstance(a, Exit | Kill | Terminate)]


def test_a_reload_rolled_back_by_a_failed_start_says_the_line_that_names_the_error() -> None:
    sup = make(policy("web", workers=1))
    boot(sup)
    sup.handle(ReloadRequested(), 1.0)
    sup.handle(MessageReceived(2, frames.FAILED, TRACEBACK), 1.5)
    out = sup.handle(WorkerExited(2, 1, None), 1.6)
    (args,) = emits(out, "reload_failed")
    reason = "worker 2 could not start before it was ready: " + TRACEBACK.splitlines()[-1]
    assert args[0].reason == reason
    assert f"[web] reload rolled back: {reason}" in logs(out)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (TRACEBACK, 'ModuleNotFoundError: No module named "x"'),
        ("module 'app' has no attribute 'nosuch'\n", "module 'app' has no attribute 'nosuch'"),
        ("lifespan startup failed: boom\nmore\n", "lifespan startup failed: boom"),
        (  # a chain: the exception raised last; a dotted name and a bare one count
            "Traceback (most recent call last):\n  x\nKeyError\n\nDuring handling of the above "
            'exception, another exception occurred:\n\n  File "a.py", line 1\n'
            "    raise Boom(1)\nmy.mod.Boom: 1\n",
            "my.mod.Boom: 1",
        ),
        ('\n  File "a.py", line 3, in f\n    g()\n', 'File "a.py", line 3, in f'),  # cut short
        ("Traceback (most recent call last):\n  ...\nE: " + "x" * 300, "E: " + "x" * 194 + "..."),
        ("", ""),
    ],
)
def test_the_line_of_a_start_error_that_says_what_went_wrong(error: str, line: str) -> None:
    assert _exits.error_line(error) == line


def test_a_drain_turns_connections_away_once_and_says_how_to_resume() -> None:
    sup = make()
    boot(sup)
    out = sup.handle(DrainRequested(), 1.0)
    assert "[web] drained: new connections are turned away; SIGUSR2 resumes, SIGINT stops" in (
        logs(out)
    )
    assert [a for a in sup.handle(DrainRequested(), 2.0) if isinstance(a, TurnAway)] == []
    sup.handle(StopRequested(), 3.0)
    assert effects(sup.handle(ResumeRequested(), 3.5)) == []  # stopping: no way back


def test_a_first_early_failure_reads_as_a_replacement_not_a_retry_loop() -> None:
    sup = make(policy("web", workers=1))
    boot(sup)
    out = sup.handle(WorkerExited(1, 1, None), 1.0)
    assert "a worker failed early: starting its replacement now" in logs(out)
    assert "next start in" not in logs(out)


# --- the shutdown delay ---------------------------------------------------------------------


def test_a_sigterm_stop_serves_through_the_shutdown_delay_then_drains() -> None:
    """Kubernetes takes a pod out of its endpoints as it sends SIGTERM: traffic still comes
    for a few seconds, so the workers go on serving (not ready) before anything drains."""
    sup = Supervisor([policy("web", workers=1)], random=lambda: 1.0, shutdown_delay=5.0)
    boot(sup)
    assert sup.ledger.phase() == "serving"
    out = sup.handle(StopRequested(delayed=True), 10.0)
    assert out == [
        Log(logging.INFO, "stopping in 5s (--shutdown-delay): serving meanwhile, not ready")
    ]
    assert sup.ledger.phase() == "shutting down" and sup.next_deadline() == 15.0
    assert sup.handle(StopRequested(delayed=True), 11.0) == []  # a second SIGTERM: the same
    assert effects(sup.handle(TimePassed(), 14.9)) == []
    assert effects(sup.handle(TimePassed(), 15.0)) == [TurnAway("web", on=True), Terminate(1)]
    assert sup.ledger.phase() == "stopping"
    assert effects(sup.handle(WorkerExited(1, 0, None), 15.5)) == [
        Emit("web", "worker_exit", (WorkerExit(1, 101, "web", 1, 0, None, 15.5, "stop"),)),
        Exit(0),
    ]


def test_sigint_in_the_shutdown_delay_stops_at_once_and_no_delay_means_none() -> None:
    sup = Supervisor([policy("web", workers=1)], random=lambda: 1.0, shutdown_delay=5.0)
    boot(sup)
    sup.handle(StopRequested(delayed=True), 10.0)
    assert effects(sup.handle(StopRequested(), 11.0)) == [TurnAway("web", on=True), Terminate(1)]
    assert sup.ledger.shutdown_at is None and sup.next_deadline() == 11.0 + 30.0
    plain = make(policy("web", workers=1))  # shutdown_delay 0: a SIGTERM stop drains now
    boot(plain)
    assert effects(plain.handle(StopRequested(delayed=True), 1.0)) == [
        TurnAway("web", on=True),
        Terminate(1),
    ]


def test_a_master_that_overslept_gives_its_ready_workers_a_fresh_window() -> None:
    """Only ready workers have a heartbeat window; a booting one keeps its boot deadline."""
    sup = make(policy("web", workers=1))
    boot(sup)
    sup.handle(ScaleRequested("web", workers=2), 1.0)  # worker 2 spawns and boots
    out = sup.handle(TimePassed(overslept=5.0), 40.0)
    assert (
        Log(
            logging.WARNING,
            "the master was not running for 5.0s; every worker gets a fresh heartbeat window",
        )
        in out
    )
    ready, booting = sup.ledger.workers[1], sup.ledger.workers[2]
    assert (ready.heartbeat_at, booting.heartbeat_at) == (40.0, 1.0)

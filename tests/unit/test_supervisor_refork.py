"""The supervisor with ``refork_after`` (``--refork-after``), event by event: a worker past the
count forks the next generation's template (``Promote``), the broker rolls onto it as a
reload does, the counts of the list apply one generation after the other, and a promotion
that fails in any way rolls back with the old template and workers serving."""

from __future__ import annotations

from test_supervisor import effects, emits, logs, make, policy, ready

from prefork.core import _frames as frames
from prefork.core._events import (
    DrainRequested,
    Emit,
    Exit,
    Kill,
    MessageReceived,
    Promote,
    ReloadRequested,
    Spawn,
    Started,
    StartTemplate,
    StopRequested,
    StopTemplate,
    TemplateExited,
    TemplateReady,
    Terminate,
    TimePassed,
    WorkerExited,
)
from prefork.core._supervisor import Supervisor


def reforking(refork_after: tuple[int, ...] = (50, 100), **options: object) -> Supervisor:
    return make(
        policy("web", workers=2, template=True, refork_after=refork_after, **options)  # type: ignore[arg-type]
    )


def boot(sup: Supervisor) -> None:
    """Template 1 ready at 1.5, workers 1 and 2 ready at 2.0."""
    assert effects(sup.handle(Started(), 0.0)) == [StartTemplate("web", 1)]
    assert effects(sup.handle(TemplateReady("web", 1), 1.5)) == [
        Spawn(1, "web", 1),
        Spawn(2, "web", 1),
    ]
    ready(sup, 1, 2.0)
    ready(sup, 2, 2.0)


def served(sup: Supervisor, worker_id: int, requests: object, now: float) -> list[object]:
    """Worker ``worker_id`` reports as the HTTP worker does (the report's own event left out)."""
    body = {"status": {"requests": requests, "connections": 1}, "metrics": []}
    out = sup.handle(MessageReceived(worker_id, frames.REPORT, body), now)
    return [a for a in out if not (isinstance(a, Emit) and a.event == "worker_report")]


def answer(sup: Supervisor, worker_id: int, body: object, now: float) -> list[object]:
    return sup.handle(MessageReceived(worker_id, frames.PROMOTED, body), now)  # type: ignore[return-value]


def promoted(sup: Supervisor) -> None:
    """Worker 1 served 50 at 10.0: it is asked to fork the template of generation 2."""
    out = served(sup, 1, 50, 10.0)
    assert effects(out) == [Promote(1, "web", 2)]  # type: ignore[arg-type]
    assert "refork: worker 1 (pid 101) served 50 requests" in logs(out)  # type: ignore[arg-type]


def test_a_worker_past_the_count_forks_the_next_template_and_the_broker_rolls_onto_it() -> None:
    sup = reforking()
    boot(sup)
    assert effects(served(sup, 1, 49, 5.0)) == []  # type: ignore[arg-type]
    assert sup.status(5.0)["web"]["reforks"] == {"count": 0, "ago": None, "next_after": 50}
    promoted(sup)
    status = sup.status(10.0)["web"]
    assert (status["generation"], status["reloading"]) == (2, True)
    assert status["templates"][1]["promoted_from"] == 1
    out = answer(sup, 1, {"generation": 2, "pid": 900}, 10.1)
    assert "worker 1 forked the template of generation 2 (pid 900)" in logs(out)  # type: ignore[arg-type]
    out = sup.handle(TemplateReady("web", 2), 10.2)
    assert "forked by worker 1 in 0.20s" in logs(out)
    assert effects(out) == [Spawn(3, "web", 2)]
    assert effects(ready(sup, 3, 10.3))[-2:] == [Terminate(1, True), Spawn(4, "web", 2)]
    sup.handle(WorkerExited(1, 0, None), 10.4)
    out = ready(sup, 4, 10.5)
    assert Terminate(2, True) in out and StopTemplate("web", 1) in out
    assert len(emits(out, "reload_done")) == 1
    assert sup.status(12.5)["web"]["reforks"] == {"count": 1, "ago": 2.0, "next_after": 100}
    # The next generation's workers refork at the next count; after the last, never again.
    assert effects(served(sup, 3, 99, 13.0)) == []  # type: ignore[arg-type]
    assert effects(served(sup, 3, 100, 13.0)) == [Promote(3, "web", 3)]  # type: ignore[arg-type]
    answer(sup, 3, {"generation": 3, "pid": 901}, 13.1)
    sup.handle(TemplateReady("web", 3), 13.2)
    ready(sup, 5, 13.3)
    sup.handle(WorkerExited(3, 0, None), 13.4)
    out = ready(sup, 6, 13.5)
    assert StopTemplate("web", 2) in out
    assert sup.status(13.5)["web"]["reforks"] == {"count": 2, "ago": 0.0, "next_after": None}
    assert effects(served(sup, 5, 10_000, 14.0)) == []  # type: ignore[arg-type]


def test_a_worker_that_is_not_fork_safe_rolls_the_refork_back_and_is_not_asked_again() -> None:
    sup = reforking()
    boot(sup)
    promoted(sup)
    out = answer(sup, 1, {"generation": 2, "error": "not fork safe: 3 threads run"}, 10.1)
    assert StopTemplate("web", 2, kill=True) in out
    assert "refork rolled back: worker 1 could not fork the template: not fork safe" in logs(out)  # type: ignore[arg-type]
    (result,) = emits(out, "reload_failed")  # type: ignore[arg-type]
    assert "not fork safe" in result[0].reason  # type: ignore[attr-defined]
    status = sup.status(10.1)["web"]
    assert status["reloading"] is False and [t["generation"] for t in status["templates"]] == [1]
    assert effects(served(sup, 1, 80, 11.0)) == []  # type: ignore[arg-type]  # never again
    assert effects(served(sup, 2, 50, 11.0)) == [Promote(2, "web", 3)]  # type: ignore[arg-type]


def test_a_worker_that_dies_before_it_answers_rolls_the_refork_back() -> None:
    sup = reforking()
    boot(sup)
    promoted(sup)
    out = sup.handle(WorkerExited(1, None, 9), 10.5)
    assert "refork rolled back: worker 1 left before it forked the template" in logs(out)
    assert Spawn(3, "web", 1) in out  # its replacement comes from the serving template
    assert sup.status(10.5)["web"]["backoff"] == 0.0


def test_a_promotion_not_answered_within_boot_timeout_rolls_back_and_a_late_one_is_killed() -> None:
    sup = reforking(boot_timeout=5.0)
    boot(sup)
    promoted(sup)
    assert sup.next_deadline() == 15.0
    out = sup.handle(TimePassed(), 15.0)
    assert "worker 1 did not fork the template within 5s" in logs(out)
    assert len(emits(out, "reload_failed")) == 1
    out = answer(sup, 1, {"generation": 2, "pid": 900}, 16.0)
    assert effects(out) == [StopTemplate("web", 2, kill=True)]  # type: ignore[arg-type]


def test_a_template_that_dies_before_it_is_ready_rolls_back_without_a_backoff() -> None:
    sup = reforking()
    boot(sup)
    promoted(sup)
    answer(sup, 1, {"generation": 2, "pid": 900}, 10.1)
    out = sup.handle(TemplateExited("web", 2, None, 9), 10.2)
    assert "refork rolled back: the template of generation 2" in logs(out)
    assert len(emits(out, "reload_failed")) == 1
    assert sup.status(10.2)["web"]["backoff"] == 0.0 and sup.status(10.2)["web"]["failures"] == 0
    # One that dies later (asked to leave by the rollback's kill) changes nothing more.
    assert effects(sup.handle(TemplateExited("web", 2, None, 9), 10.3)) == []


def test_a_template_slow_after_the_answer_is_killed_at_boot_timeout_and_rolls_back() -> None:
    sup = reforking(boot_timeout=5.0)
    boot(sup)
    promoted(sup)
    answer(sup, 1, {"generation": 2, "pid": 900}, 10.1)
    out = sup.handle(TimePassed(), 15.0)
    assert effects(out) == [StopTemplate("web", 2, kill=True)]
    out = sup.handle(TemplateExited("web", 2, None, 9), 15.1)
    assert "refork rolled back" in logs(out) and len(emits(out, "reload_failed")) == 1


def test_a_drain_between_the_kill_and_the_reaping_of_a_slow_template_rolls_back_once() -> None:
    sup = reforking(boot_timeout=5.0)
    boot(sup)
    promoted(sup)
    answer(sup, 1, {"generation": 2, "pid": 900}, 10.1)
    sup.handle(TimePassed(), 15.0)
    assert len(emits(sup.handle(DrainRequested(), 15.05), "reload_failed")) == 1
    out = sup.handle(TemplateExited("web", 2, None, 9), 15.1)
    assert "refork rolled back" not in logs(out) and emits(out, "reload_failed") == []


def test_a_reload_during_a_refork_wins_and_starts_the_counts_over() -> None:
    sup = reforking()
    boot(sup)
    promoted(sup)
    served(sup, 2, 60, 10.05)
    out = sup.handle(ReloadRequested(), 10.1)
    assert effects(out) == [StopTemplate("web", 2, kill=True), StartTemplate("web", 3)]
    assert sup.status(10.1)["web"]["reforks"]["next_after"] == 50
    # The promotion's late answer: its template is not wanted any more.
    out = answer(sup, 1, {"generation": 2, "pid": 900}, 10.2)
    assert effects(out) == [StopTemplate("web", 2, kill=True)]  # type: ignore[arg-type]


def test_a_drain_or_a_stop_during_a_refork_ends_it_and_the_master_exits() -> None:
    sup = reforking()
    boot(sup)
    promoted(sup)
    out = sup.handle(DrainRequested(), 10.1)
    assert StopTemplate("web", 2, kill=True) in out and len(emits(out, "reload_failed")) == 1
    sup.handle(StopRequested(), 10.2)
    sup.handle(WorkerExited(1, 0, None), 10.3)
    sup.handle(WorkerExited(2, 0, None), 10.3)
    out = sup.handle(TemplateExited("web", 1, 0, None), 10.4)
    assert Exit(0) in out  # the promotion never answered: no process to wait for


def test_no_refork_while_the_serving_template_restarts_after_a_kill() -> None:
    sup = reforking()
    boot(sup)
    out = sup.handle(TemplateExited("web", 1, None, 9), 5.0)
    assert StartTemplate("web", 1) in out
    assert effects(served(sup, 1, 50, 5.1)) == []  # type: ignore[arg-type]
    out = sup.handle(TemplateReady("web", 1), 5.5)
    assert Promote(1, "web", 2) in out


def test_no_refork_while_a_reload_or_a_drain_runs_or_without_refork_after() -> None:
    sup = reforking()
    boot(sup)
    sup.handle(ReloadRequested(), 3.0)
    assert effects(served(sup, 1, 50, 3.1)) == []  # type: ignore[arg-type]
    sup = reforking()
    boot(sup)
    sup.handle(DrainRequested(), 3.0)
    assert not [a for a in served(sup, 1, 50, 3.1) if isinstance(a, Promote)]
    sup = make(policy("web", workers=2, template=True))
    sup.handle(Started(), 0.0)
    sup.handle(TemplateReady("web", 1), 1.0)
    ready(sup, 1, 2.0)
    assert effects(served(sup, 1, 10**6, 3.0)) == []  # type: ignore[arg-type]
    assert sup.status(3.0)["web"]["reforks"] == {"count": 0, "ago": None, "next_after": None}


def test_reports_that_count_no_requests_count_nothing() -> None:
    sup = reforking((1,))
    boot(sup)
    for body in (None, [], {"status": []}, {"status": {"requests": True}}, {"status": {}}):
        assert Promote(1, "web", 2) not in sup.handle(MessageReceived(1, frames.REPORT, body), 3.0)
    assert effects(served(sup, 1, -5, 3.0)) == []  # type: ignore[arg-type]
    assert Promote(1, "web", 2) in served(sup, 1, 1, 3.0)


def test_answers_nobody_asked_for_change_nothing() -> None:
    sup = reforking()
    boot(sup)
    assert effects(answer(sup, 1, {"generation": 1, "pid": 5}, 3.0)) == []  # type: ignore[arg-type]
    assert effects(answer(sup, 1, "odd", 3.0)) == []  # type: ignore[arg-type]
    assert effects(answer(sup, 1, {"generation": 9}, 3.0)) == []  # type: ignore[arg-type]
    assert effects(answer(sup, 99, {"generation": 9, "pid": 5}, 3.0)) == []  # type: ignore[arg-type]
    promoted(sup)
    # Another worker cannot answer for worker 1, nor worker 1 twice.
    assert effects(answer(sup, 2, {"generation": 2, "pid": 5}, 10.1)) == []  # type: ignore[arg-type]
    answer(sup, 1, {"generation": 2, "pid": 900}, 10.1)
    assert effects(answer(sup, 1, {"generation": 2, "error": "x"}, 10.2)) == []  # type: ignore[arg-type]
    assert sup.status(10.2)["web"]["reloading"] is True


def test_a_promoted_template_killed_after_it_served_starts_again_from_disk() -> None:
    sup = reforking()
    boot(sup)
    promoted(sup)
    answer(sup, 1, {"generation": 2, "pid": 900}, 10.1)
    sup.handle(TemplateReady("web", 2), 10.2)
    out = sup.handle(TemplateExited("web", 2, None, 9), 10.3)
    assert StartTemplate("web", 2) in out and Kill not in [type(a) for a in out]

"""The supervisor with templates (``template=True``), event by event: a template per
generation starts first, workers spawn once it is ready, a reload is a new template, a
template that cannot import rolls the reload back before any worker is touched, and a crash
comes back from its own generation's template."""

from __future__ import annotations

import logging

from test_supervisor import effects, emits, logs, make, policy, ready

from prefork.core import _frames as frames
from prefork.core._events import (
    DrainRequested,
    Emit,
    Exit,
    Kill,
    Log,
    MessageReceived,
    ReloadRequested,
    ResumeRequested,
    Spawn,
    SpawnFailed,
    Started,
    StartTemplate,
    StopRequested,
    StopTemplate,
    TemplateExited,
    TemplateReady,
    Terminate,
    TimePassed,
    TurnAway,
    WorkerExited,
    WorkerSpawned,
)
from prefork.core._payloads import ReloadResult
from prefork.core._supervisor import Supervisor

BROKEN = (
    'Traceback (most recent call last):\n  File "app.py", line 1\nRuntimeError: broken deploy\n'
)


def templated(**options: object) -> Supervisor:
    return make(policy("web", workers=2, template=True, **options))  # type: ignore[arg-type]


def boot(sup: Supervisor) -> None:
    """Start: template 1 ready at 1.5, workers 1 and 2 ready at 2.0."""
    assert effects(sup.handle(Started(), 0.0)) == [StartTemplate("web", 1)]
    assert effects(sup.handle(TemplateReady("web", 1), 1.5)) == [
        Spawn(1, "web", 1),
        Spawn(2, "web", 1),
    ]
    ready(sup, 1, 2.0)
    ready(sup, 2, 2.0)


def test_workers_spawn_once_their_template_is_ready() -> None:
    sup = templated()
    out = sup.handle(Started(), 0.0)
    assert effects(out) == [StartTemplate("web", 1)]
    assert sup.next_deadline() == 60.0  # the template's boot_timeout
    out = sup.handle(TemplateReady("web", 1), 1.5)
    assert "[web] template of generation 1 is ready (imported in 1.50s)" in logs(out)
    assert effects(out) == [Spawn(1, "web", 1), Spawn(2, "web", 1)]
    assert sup.handle(TemplateReady("web", 1), 1.6) == []  # once


def test_a_reload_starts_a_new_template_and_stops_the_old_once_done() -> None:
    sup = templated()
    boot(sup)
    out = sup.handle(ReloadRequested(), 10.0)
    assert effects(out) == [StartTemplate("web", 2)]  # no worker touched yet
    assert effects(sup.handle(TemplateReady("web", 2), 11.5)) == [Spawn(3, "web", 2)]
    assert effects(ready(sup, 3, 12.0))[-2:] == [Terminate(1, True), Spawn(4, "web", 2)]
    sup.handle(WorkerExited(1, 0, None), 12.1)
    out = ready(sup, 4, 12.5)
    assert Terminate(2, True) in out
    assert StopTemplate("web", 1) in out  # the reload is done: generation 2 serves
    assert len(emits(out, "reload_done")) == 1
    out = sup.handle(TemplateExited("web", 1, 0, None), 12.6)
    assert logs(out) == "[web] template of generation 1 left"
    # a crash now comes back from generation 2's template
    sup.handle(WorkerExited(2, 0, None), 12.7)
    assert effects(sup.handle(WorkerExited(3, None, 9), 20.0))[-1] == Spawn(5, "web", 2)


def test_a_template_that_cannot_import_rolls_the_reload_back_before_any_worker_is_touched() -> None:
    sup = templated()
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)
    out = sup.handle(TemplateExited("web", 2, 1, None, BROKEN), 10.5)
    reason = "the template of generation 2 could not start: RuntimeError: broken deploy"
    assert effects(out) == [
        Emit("web", "reload_failed", (ReloadResult("web", 2, 0, reason, 0.5),)),
    ]
    assert f"[web] reload rolled back: {reason}" in logs(out)
    assert "template of generation 2 could not start:\n" + BROKEN in logs(out)  # printed once
    assert not any(isinstance(a, Terminate | Kill) for a in out)
    # a crash after the rolled-back reload comes back on the old code: generation 1
    out = sup.handle(WorkerExited(1, None, 9), 20.0)
    assert effects(out)[-1] == Spawn(3, "web", 1)
    # the same error again is not printed in full twice
    sup.handle(ReloadRequested(), 30.0)
    out = sup.handle(TemplateExited("web", 3, 1, None, BROKEN), 30.5)
    assert "could not start:\n" not in logs(out)


def test_a_template_that_cannot_import_on_the_first_start_stops_the_master() -> None:
    sup = templated()
    sup.handle(Started(), 0.0)
    out = sup.handle(TemplateExited("web", 1, 1, None, BROKEN), 1.0)
    assert effects(out) == [TurnAway("web", on=True), Exit(3)]
    assert "no web worker could start (the template of generation 1 could not start" in logs(out)


def test_a_template_importing_past_boot_timeout_is_killed() -> None:
    sup = templated(boot_timeout=5.0)
    sup.handle(Started(), 0.0)
    assert sup.handle(TimePassed(), 4.0) == []
    assert effects(sup.handle(TimePassed(), 5.0)) == [StopTemplate("web", 1, kill=True)]
    assert sup.next_deadline() is None
    out = sup.handle(TemplateExited("web", 1, None, 9), 5.1)
    assert effects(out) == [TurnAway("web", on=True), Exit(3)]
    assert "did not import within boot_timeout (5s)" in logs(out)


def test_a_template_killed_after_it_served_starts_again_at_once_within_the_rate_cap() -> None:
    sup = templated(timeout=0.0)
    boot(sup)
    out = sup.handle(TemplateExited("web", 1, None, 9), 30.0)
    assert logs(out) == (
        "[web] the template of generation 1 exited with signal 9; starting it again now"
    )
    assert effects(out) == [StartTemplate("web", 1)]  # its code imports: no backoff
    # a crash meanwhile waits for the template: no spawn, and no deadline in the past
    out = sup.handle(WorkerExited(1, None, 9), 30.5)
    assert not any(isinstance(a, Spawn) for a in out)
    assert sup.next_deadline() == 90.0  # the new template's boot_timeout
    assert effects(sup.handle(TemplateReady("web", 1), 31.0)) == [Spawn(3, "web", 1)]
    # killed again and again: a burst of twice the desired count, then rate-capped
    for _ in range(5):
        sup.handle(TemplateReady("web", 1), 32.0)
        out = sup.handle(TemplateExited("web", 1, None, 9), 32.0)
    assert "starting it again in 0.50s" in logs(out)
    assert effects(out) == []
    assert effects(sup.handle(TimePassed(), 32.5)) == [StartTemplate("web", 1)]


def test_a_template_that_cannot_import_any_more_starts_again_after_the_backoff() -> None:
    sup = templated(timeout=0.0)
    boot(sup)
    sup.handle(TemplateExited("web", 1, None, 9), 30.0)  # killed; its restart cannot import
    out = sup.handle(TemplateExited("web", 1, 1, None, BROKEN), 31.0)
    assert "[web] the template of generation 1 could not start: RuntimeError" in logs(out)
    assert effects(out) == [StartTemplate("web", 1)]  # a first failure: at once
    out = sup.handle(TemplateExited("web", 1, None, None, "fork: out of memory"), 32.0)
    assert "could not start: fork: out of memory" in logs(out)
    assert effects(out) == []  # a second failure in a row backs off
    assert sup.next_deadline() == 32.5
    assert effects(sup.handle(TimePassed(), 32.5)) == [StartTemplate("web", 1)]


def test_a_worker_whose_template_died_under_it_does_not_back_off() -> None:
    sup = templated()
    boot(sup)
    sup.handle(WorkerExited(1, None, 9), 30.0)  # worker 3 asked of the template
    out = sup.handle(SpawnFailed(3, "the template exited", backoff=False), 30.1)
    assert "backing off" not in logs(out) and "failed early" not in logs(out)
    assert sup.ledger.brokers["web"].failures == 0


def test_a_template_that_could_not_be_forked_says_so() -> None:
    sup = templated()
    boot(sup)
    out = sup.handle(TemplateExited("web", 1, None, None), 30.0)
    assert "[web] the template of generation 1 could not be forked" in logs(out)


def test_a_template_that_exits_with_a_code_says_so() -> None:
    sup = templated()
    boot(sup)
    out = sup.handle(TemplateExited("web", 1, 1, None), 30.0)
    assert "[web] the template of generation 1 exited with code 1" in logs(out)


def test_a_drain_stops_the_template_and_a_resume_starts_one_from_disk() -> None:
    sup = templated()
    boot(sup)
    out = sup.handle(DrainRequested(), 10.0)
    assert StopTemplate("web", 1) in out  # a drained master holds only its sockets
    sup.handle(WorkerExited(1, 0, None), 10.1)
    sup.handle(ResumeRequested(), 10.2)  # the template has not left yet: nothing to fork from
    out = sup.handle(WorkerExited(2, 0, None), 10.3)
    assert not any(isinstance(a, Spawn | StartTemplate) for a in out)
    out = sup.handle(TemplateExited("web", 1, 0, None), 10.4)
    assert effects(out) == [StartTemplate("web", 1)]  # the serving generation, from disk
    assert effects(sup.handle(TemplateReady("web", 1), 11.0)) == [
        Spawn(3, "web", 1),
        Spawn(4, "web", 1),
    ]


def test_a_stop_ends_the_template_before_the_master_exits() -> None:
    sup = templated()
    boot(sup)
    out = sup.handle(StopRequested(), 11.0)
    assert StopTemplate("web", 1) in out
    sup.handle(WorkerExited(1, 0, None), 11.1)
    out = sup.handle(WorkerExited(2, 0, None), 11.2)
    assert not any(isinstance(a, Exit) for a in out)  # the template has not left yet
    assert effects(sup.handle(TemplateExited("web", 1, 0, None), 11.3)) == [Exit(0)]


def test_a_template_still_importing_is_killed_when_no_longer_wanted() -> None:
    sup = templated()
    sup.handle(Started(), 0.0)
    assert effects(sup.handle(StopRequested(), 1.0)) == [
        TurnAway("web", on=True),
        StopTemplate("web", 1, kill=True),
    ]
    assert effects(sup.handle(TemplateExited("web", 1, None, 9), 1.1)) == [Exit(0)]


def test_events_of_unknown_templates_change_nothing() -> None:
    sup = templated()
    boot(sup)
    assert sup.handle(TemplateReady("web", 7), 3.0) == []
    assert sup.handle(TemplateExited("web", 7, 0, None), 3.0) == []


def test_a_newer_reload_while_a_template_imports_rolls_onto_the_newest() -> None:
    sup = templated()
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)
    out = sup.handle(ReloadRequested(), 10.5)
    assert effects(out) == [StopTemplate("web", 2, kill=True), StartTemplate("web", 3)]
    assert effects(sup.handle(TemplateReady("web", 3), 12.0)) == [Spawn(3, "web", 3)]


def test_a_crash_during_a_reload_comes_from_the_new_template() -> None:
    sup = templated()
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)
    out = sup.handle(WorkerExited(2, None, 9), 11.0)
    assert not any(isinstance(a, Spawn) for a in out)  # generation 2's template imports
    assert effects(sup.handle(TemplateReady("web", 2), 11.5)) == [
        Spawn(3, "web", 2),
        Spawn(4, "web", 2),
    ]
    out = sup.handle(MessageReceived(3, frames.READY, None), 12.0)
    assert Log(logging.INFO, "[web] worker 3 (pid 0, generation 2) is ready") in out
    assert sup.handle(WorkerSpawned(4, 104), 12.0)[0].level == logging.DEBUG  # type: ignore[union-attr]


def test_status_shows_each_template_by_generation_with_its_state_and_uptime() -> None:
    """``prefork ctl status`` and the metrics read the templates off the status (the master
    fills in their pids); none without templates."""
    assert make(policy("web", workers=1)).status(0.0)["web"]["templates"] == []
    sup = templated()
    boot(sup)
    sup.handle(ReloadRequested(), 10.0)
    row = {"pid": None, "standby": None, "promoted_from": None}
    assert sup.status(10.5)["web"]["templates"] == [
        {**row, "generation": 1, "state": "ready", "uptime": 10.5},
        {**row, "generation": 2, "state": "starting", "uptime": 0.5},
    ]

"""``--template auto`` (the default), event by event: a template whose import left threads or
sockets open is not used (asked to leave; its generation's workers import the code
themselves, one log line says why and what to do), the next generation tries a template
again, and ``--template on`` uses it anyway with a warning."""

from __future__ import annotations

import logging

from test_supervisor import effects, logs, make, policy, ready
from test_supervisor_refork import served

from prefork.core._events import (
    Log,
    ReloadRequested,
    Spawn,
    Started,
    StartTemplate,
    StopTemplate,
    TemplateExited,
    TemplateReady,
    Terminate,
    WorkerExited,
)
from prefork.core._supervisor import Supervisor
from prefork.core._templating import hazards

THREADED = TemplateReady("web", 1, threads=("Thread-1 (poll)",))
LINE = (
    "[web] template of generation 1 not used: the import started threads (Thread-1 (poll)); "
    "workers import the app themselves; start threads and open connections in the lifespan "
    "startup (or a Worker's init), or pass --template off to silence this"
)


def auto(**options: object) -> Supervisor:
    return make(policy("web", **{"workers": 2, "template": "auto", **options}))


def fell_back(sup: Supervisor) -> None:
    """Template 1 imported with a thread running at 1.5: not used; workers 1, 2 ready at 2.0."""
    assert effects(sup.handle(Started(), 0.0)) == [StartTemplate("web", 1)]
    out = sup.handle(THREADED, 1.5)
    assert effects(out) == [
        StopTemplate("web", 1),
        Spawn(1, "web", 1, plain=True),
        Spawn(2, "web", 1, plain=True),
    ]
    assert [(a.level, a.message) for a in out if isinstance(a, Log)] == [(logging.WARNING, LINE)]
    ready(sup, 1, 2.0)
    ready(sup, 2, 2.0)


def test_a_template_whose_import_started_threads_is_not_used_and_workers_import() -> None:
    sup = auto()
    fell_back(sup)
    assert [t["state"] for t in sup.status(2.0)["web"]["templates"]] == ["unused"]
    # it leaves as asked: no line, and no other template for generation 1
    assert sup.handle(TemplateExited("web", 1, 0, None), 2.1) == []
    assert sup.handle(THREADED, 2.2) == []  # a late or repeated report changes nothing
    # a crash is replaced by a worker that imports the code itself, not by a new template
    out = sup.handle(WorkerExited(1, None, 9), 3.0)
    assert effects(out)[-1:] == [Spawn(3, "web", 1, plain=True)]
    assert not any(isinstance(a, StartTemplate) for a in out)


def test_the_next_reload_tries_a_template_again_and_the_unused_record_goes() -> None:
    sup = auto()
    fell_back(sup)
    sup.handle(TemplateExited("web", 1, 0, None), 2.1)
    assert effects(sup.handle(ReloadRequested(), 10.0)) == [StartTemplate("web", 2)]
    out = sup.handle(TemplateReady("web", 2), 11.0)  # the code was fixed: nothing left open
    assert "template of generation 2 is ready (imported in 1.00s)" in logs(out)
    assert effects(out) == [Spawn(3, "web", 2)]  # forked by the template
    ready(sup, 3, 11.5)
    sup.handle(WorkerExited(1, 0, None), 11.6)
    out = ready(sup, 4, 12.0)
    assert Terminate(2, True) in out
    assert not any(isinstance(a, StopTemplate) for a in out)  # generation 1's left already
    assert [t["generation"] for t in sup.status(12.0)["web"]["templates"]] == [2]


def test_an_unused_template_not_reaped_yet_is_forgotten_once_it_is() -> None:
    sup = auto(workers=1)
    sup.handle(Started(), 0.0)
    sup.handle(TemplateReady("web", 1, sockets=1), 1.0)
    ready(sup, 1, 1.5)
    sup.handle(ReloadRequested(), 2.0)
    sup.handle(TemplateReady("web", 2), 2.5)
    out = ready(sup, 2, 3.0)  # the reload is done: generation 1's template is not wanted
    assert not any(isinstance(a, StopTemplate) for a in out)  # asked to leave already
    states = {t["generation"]: t["state"] for t in sup.status(3.0)["web"]["templates"]}
    assert states == {1: "stopping", 2: "ready"}
    sup.handle(TemplateExited("web", 1, 0, None), 3.1)
    assert [t["generation"] for t in sup.status(3.1)["web"]["templates"]] == [2]


def test_a_generation_whose_template_was_not_used_is_not_reforked() -> None:
    sup = auto(refork_after=(50,))
    sup.handle(Started(), 0.0)
    out = sup.handle(THREADED, 1.5)
    assert "import the app themselves; no refork in this generation; start" in logs(out)
    ready(sup, 1, 2.0)
    ready(sup, 2, 2.0)
    assert effects(served(sup, 1, 500, 10.0)) == []  # type: ignore[arg-type]


def test_template_on_uses_a_template_with_threads_anyway_and_says_so() -> None:
    sup = make(policy("web", workers=1, template="on"))
    sup.handle(Started(), 0.0)
    out = sup.handle(TemplateReady("web", 1, threads=("poller",), sockets=2), 1.0)
    assert effects(out) == [Spawn(1, "web", 1)]
    assert [(a.level, a.message) for a in out if isinstance(a, Log)] == [
        (
            logging.WARNING,
            "[web] template of generation 1 is ready (imported in 1.00s), though the import "
            "started threads (poller) and opened 2 sockets: its workers are forked from it "
            "anyway (--template on), without those threads and sharing those sockets; pass "
            "--template auto to have them import the app themselves",
        )
    ]


def test_template_on_says_what_its_workers_share_or_miss() -> None:
    sup = make(policy("web", workers=1, template="on"))
    sup.handle(Started(), 0.0)
    out = sup.handle(TemplateReady("web", 1, sockets=1), 1.0)
    assert "though the import opened 1 socket: its workers are forked from it anyway " in logs(out)
    assert "(--template on), sharing those sockets; pass" in logs(out)


def test_what_an_import_left_is_said_in_a_few_words() -> None:
    assert hazards((), 0) == ""
    assert hazards((), 1) == "the import opened 1 socket"
    names = tuple(f"t{i}" for i in range(7))
    assert hazards(names, 0) == "the import started threads (t0, t1, t2, t3, t4 and 2 more)"

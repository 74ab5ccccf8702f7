"""Refork (``--refork-after``, Shopify pitchfork's idea): once a worker of the serving
generation has served the broker's count of requests, it forks the next generation's template
from itself, and the broker rolls onto that template as a reload does. The workers forked from
it share what the warmed worker built after import (caches, lazily imported modules, code
paths run once), where a template fresh from disk shares only the import.

The worker is not turned into the template: it forks a sibling (adopted by the master, as any
worker forked by a template) and keeps serving, so no request waits on the promotion. It is a
reload in every other way: a new generation, gated by the new workers' readiness, rolled back
when the promotion fails (the worker is not fork safe, dies before it answers, never answers
within ``boot_timeout``, or the new template dies before it is ready): the old template and
workers keep serving, and that worker is not asked again.

The counts (pitchfork's ``refork_after``): ``(50, 100, 1000)`` reforks once a worker served 50,
then, on the new generation, once one served 100, then 1000, then never. A reload (new code
from disk, cold again) starts the list over. Pure, like the supervisor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prefork.core._events import Action, Log, Promote, StopTemplate
from prefork.core._roster import BrokerRecord, WorkerRecord, WorkerState
from prefork.core._templates import TemplateRecord


def threshold(b: BrokerRecord) -> int | None:
    """The requests after which a worker of ``b`` forks the next template (None: no more)."""
    counts = b.policy.refork_after
    return counts[b.refork_step] if b.refork_step < len(counts) else None


def maybe_start(
    b: BrokerRecord, live: Iterable[WorkerRecord], now: float, out: list[Action]
) -> None:
    """Start a refork of ``b`` if one of its ``live`` workers is due and nothing else runs:
    no reload, recycle or other refork, no drain, and the serving template ready (the one a
    rollback falls back on)."""
    n = threshold(b)
    rolling = b.rolling
    if n is None or b.draining or rolling.reloading or rolling.queue or rolling.swap:
        return
    if not b.templates.ready(b.serving):
        return
    live = sorted(live, key=lambda w: w.started)
    due = [
        w
        for w in live
        if w.state is WorkerState.READY
        and w.generation == b.serving
        and not w.promoted
        and w.requests >= n
    ]
    if not due:
        return
    w = due[0]
    w.promoted = True
    b.generation += 1
    g = b.generation
    rolling.start_reload(g, now, [x.id for x in live], refork=True)
    b.templates.by_generation[g] = TemplateRecord(g, now, promoted_from=w.id, answered=False)
    name = b.policy.name
    msg = (
        f"[{name}] refork: worker {w.id} (pid {w.pid}) served {w.requests} requests; "
        f"it forks the template of generation {g}"
    )
    out.append(Log(logging.INFO, msg))
    out.append(Promote(w.id, name, g))


def answered(b: BrokerRecord, w: WorkerRecord, body: Any, now: float, out: list[Action]) -> None:
    """Worker ``w`` answered a promotion: the pid of the template it forked (the master holds
    its link already), or why it could not (not fork safe: threads)."""
    body = body if isinstance(body, dict) else {}
    g = body.get("generation")
    t = b.templates.by_generation.get(g) if isinstance(g, int) else None
    pid = body.get("pid")
    if t is None or t.promoted_from != w.id or t.answered:
        if t is None and isinstance(g, int) and isinstance(pid, int):
            # Too late: the refork ended meanwhile (a deadline, a reload). Not wanted.
            msg = f"worker {w.id} forked the template of generation {g} too late; killing it"
            out.append(Log(logging.WARNING, f"[{b.policy.name}] {msg}"))
            out.append(StopTemplate(b.policy.name, g, kill=True))
        return
    if isinstance(pid, int):
        t.answered = True
        msg = f"[{b.policy.name}] worker {w.id} forked the template of generation {g} (pid {pid})"
        out.append(Log(logging.INFO, msg))
        return
    error = str(body.get("error") or "no reason given")[:200]
    fail(b, t, f"worker {w.id} could not fork the template: {error}", now, out)


def left(b: BrokerRecord, worker_id: int, now: float, out: list[Action]) -> None:
    """Worker ``worker_id`` was reaped: a promotion it did not answer fails."""
    for t in list(b.templates.by_generation.values()):
        if t.promoted_from == worker_id and not t.answered:
            fail(b, t, f"worker {worker_id} left before it forked the template", now, out)


def expire(b: BrokerRecord, now: float, out: list[Action]) -> None:
    """A promotion not answered within ``boot_timeout`` fails (the worker is blocked, or
    ignores the frame)."""
    timeout = b.policy.boot_timeout
    for t in list(b.templates.by_generation.values()):
        if not t.answered and now >= t.started + timeout:
            reason = f"worker {t.promoted_from} did not fork the template within {timeout:g}s"
            fail(b, t, reason, now, out)


def fail(b: BrokerRecord, t: TemplateRecord, reason: str, now: float, out: list[Action]) -> None:
    """The promotion of ``t``, not answered, failed for ``reason``: forget it (if the worker
    names a template later, it is killed then) and roll the refork back: the serving
    generation keeps serving."""
    t.failure = reason
    b.templates.stop(t, out)  # not answered (no process known yet): forgotten at once
    rolled_back(b, t.generation, reason, now, out)


def rolled_back(
    b: BrokerRecord, generation: int, reason: str, now: float, out: list[Action]
) -> None:
    """Roll back the refork onto ``generation`` if it still runs."""
    rolling = b.rolling
    if rolling.reloading and rolling.reload is not None and rolling.reload.generation == generation:
        out.append(Log(logging.ERROR, f"[{b.policy.name}] refork rolled back: {reason}"))
        rolling.drop(now, out, f"refork: {reason}")


def done(b: BrokerRecord, now: float) -> None:
    """A refork's roll is done: count it; the next generation waits for the next count."""
    b.reforks += 1
    b.last_refork = now
    b.refork_step += 1

"""The supervisor's decisions about a broker's templates, event by event: a template is ready
(its generation's workers may spawn), or it was reaped (asked to leave; killed after it served,
so started again at once; failed to import, so backed off, a reload onto it rolled back, or on
the first start the master stopped). ``_templates.py`` keeps their states; this decides.
Pure, like the supervisor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prefork.core import _backoff, _exits, _refork
from prefork.core._events import Action, Log, TemplateExited
from prefork.core._roster import BrokerRecord
from prefork.core._templates import TemplateState


def ready(b: BrokerRecord, generation: int, now: float, out: list[Action]) -> None:
    """The template of ``generation`` said it is ready."""
    if (t := b.templates.on_ready(generation, now)) is not None:
        took = f"imported in {now - t.started:.2f}s"
        if t.promoted_from is not None:
            took = f"forked by worker {t.promoted_from} in {now - t.started:.2f}s"
        msg = f"[{b.policy.name}] template of generation {generation} is ready ({took})"
        out.append(Log(logging.INFO, msg))


def exited(
    b: BrokerRecord,
    e: TemplateExited,
    now: float,
    stopping: bool,
    jitter: Callable[[], float],
    out: list[Action],
) -> str | None:
    """The template ``e`` names was reaped. Returns why the master must stop (exit code 3):
    on the first start, no template of ``b`` ever became ready; else None."""
    t = b.templates.on_exit(e.generation)
    if t is None:
        return None
    name, g = e.broker, e.generation
    if t.state is TemplateState.STOPPING and not t.failure:
        out.append(Log(logging.DEBUG, f"[{name}] template of generation {g} left"))
        return None
    reason = f"the template of generation {g} {_exits.template_exit(t, e)}"
    if t.promoted_from is not None and t.ready_at is None:
        # A worker forked it: no import failed, nothing to back off from; the refork ends.
        out.append(Log(logging.ERROR, f"[{name}] {reason}"))
        _refork.rolled_back(b, g, reason, now, out)
        return None
    if e.error and e.error != b.last_error:
        b.last_error = e.error
        error = f"[{name}] template of generation {g} could not start:\n{e.error}"
        out.append(Log(logging.ERROR, error))
    if t.ready_at is None and not b.ever_ready and not stopping:
        return f"no {name} worker could start ({reason})"
    if t.ready_at is not None and e.signal is not None:
        # Killed after it served (the OOM killer, a kill storm): its code imports, so it
        # starts again at once, rate-capped as a killed worker's replacement is.
        delay = _backoff.killed_after_ready(b, now)
        wait = f"in {delay:.2f}s" if delay else "now"
        out.append(Log(logging.WARNING, f"[{name}] {reason}; starting it again {wait}"))
        return None
    out.append(Log(logging.ERROR, f"[{name}] {reason}"))
    out.append(Log(logging.WARNING, _backoff.failed_early(b, now, jitter())))
    rolling = b.rolling
    if t.ready_at is None and rolling.reloading and g == b.generation:
        out.append(Log(logging.ERROR, f"[{name}] reload rolled back: {reason}"))
        rolling.drop(now, out, reason)
    return None

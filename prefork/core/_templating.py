"""The supervisor's decisions about a broker's templates, event by event: a template is ready
(its generation's workers may spawn; under ``--template auto`` not if its import left threads
or sockets open: then they import the code themselves), or it was reaped (asked to leave;
killed after it served, so started again at once; failed to import, so backed off, a reload
onto it rolled back, or on the first start the master stopped). ``_templates.py`` keeps their
states; this decides. Pure, like the supervisor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prefork.core import _backoff, _exits, _refork
from prefork.core._events import Action, Log, StopTemplate, TemplateExited, TemplateReady
from prefork.core._roster import BrokerRecord
from prefork.core._templates import TemplateState

#: The most thread names a log line gives.
SHOWN_THREADS = 5


def ready(b: BrokerRecord, e: TemplateReady, now: float, out: list[Action]) -> None:
    """The template ``e`` names said it is ready. If its import left threads or sockets open,
    a fork would copy no thread (a lock one held stays held) and share the sockets: with
    ``template_fallback`` (auto) it is not used, and asked to leave; else (on) it is used,
    with a warning. Either way one line says so."""
    unsafe = hazards(e.threads, e.sockets)
    unused = bool(unsafe) and b.policy.template_fallback
    if (t := b.templates.on_ready(e.generation, now, unused)) is None:
        return
    name, g = b.policy.name, e.generation
    if unused:
        out.append(StopTemplate(name, g, kill=False))
        refork = "; no refork in this generation" if b.policy.refork_after else ""
        msg = (
            f"[{name}] template of generation {g} not used: {unsafe}; workers import the "
            f"app themselves{refork}; start threads and open connections in the lifespan "
            "startup (or a Worker's init), or pass --template off to silence this"
        )
        out.append(Log(logging.WARNING, msg))
        return
    took = f"imported in {now - t.started:.2f}s"
    if t.promoted_from is not None:
        took = f"forked by worker {t.promoted_from} in {now - t.started:.2f}s"
    msg = f"[{name}] template of generation {g} is ready ({took})"
    if unsafe:
        copies = " and ".join(
            (["without those threads"] if e.threads else [])
            + (["sharing those sockets"] if e.sockets else [])
        )
        msg += (
            f", though {unsafe}: its workers are forked from it anyway (--template on), "
            f"{copies}; pass --template auto to have them import the app themselves"
        )
    out.append(Log(logging.WARNING if unsafe else logging.INFO, msg))


def hazards(threads: tuple[str, ...], sockets: int) -> str:
    """What an import left that a fork does not carry safely ("" for nothing): ``the import
    started threads (Thread-1 (poll)) and opened 1 socket``."""
    said = []
    if threads:
        names = ", ".join(threads[:SHOWN_THREADS])
        more = f" and {len(threads) - SHOWN_THREADS} more" if len(threads) > SHOWN_THREADS else ""
        said.append(f"started threads ({names}{more})")
    if sockets:
        said.append(f"opened {sockets} socket{'s' if sockets > 1 else ''}")
    return f"the import {' and '.join(said)}" if said else ""


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
    rolling = b.rolling
    rolls_back = t.ready_at is None and rolling.reloading and g == b.generation
    if not rolls_back:  # (else the rollback's line names the reason: once is enough)
        out.append(Log(logging.ERROR, f"[{name}] {reason}"))
    out.append(Log(logging.WARNING, _backoff.failed_early(b, now, jitter())))
    if rolls_back:
        out.append(Log(logging.ERROR, f"[{name}] reload rolled back: {reason}"))
        rolling.drop(now, out, reason)
    return None

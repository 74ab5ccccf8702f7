"""How the supervisor tells of a worker's exit: its cause, the ``worker_exit`` or
``worker_crash`` event, the log lines, and a start error printed once. Pure."""

from __future__ import annotations

import logging

from prefork._broker import WorkerExit
from prefork._events import Action, Emit, Log
from prefork._roster import BrokerRecord, Cause, WorkerRecord


def tell(
    b: BrokerRecord,
    w: WorkerRecord,
    code: int | None,
    signal: int | None,
    now: float,
    out: list[Action],
) -> str:
    """Log and emit ``w``'s exit (``code``, or ``signal``); returns why, for a crash (a reload
    rolled back by it, or a first start that failed, says so), and "" for an asked exit."""
    if not w.asked and not w.cause:
        w.cause = Cause.START_FAILED if w.error else Cause.SIGNAL if signal else Cause.EXIT
    payload = WorkerExit(
        w.id, w.pid, w.broker, w.generation, code, signal, now - w.started, w.cause
    )
    who = f"[{w.broker}] worker {w.id} (pid {w.pid})"
    if w.asked:
        if w.failure:  # asked, but it had to be killed
            out.append(Log(logging.WARNING, f"{who} {w.failure}: killed"))
        else:
            out.append(Log(logging.INFO, f"{who} left as asked"))
        print_error(b, w, out)
        out.append(Emit(w.broker, "worker_exit", (payload,)))
        return ""
    how = f"code {code}" if signal is None else f"signal {signal}"
    why = w.failure or ("could not start" if w.error else f"exited with {how}")
    booted = "" if w.ready_at is not None else " before it was ready"
    out.append(Log(logging.WARNING, f"{who} {why}{booted}"))
    print_error(b, w, out)
    out.append(Emit(w.broker, "worker_crash", (payload,)))
    return why


def print_error(b: BrokerRecord, w: WorkerRecord, out: list[Action]) -> None:
    """A start error, as one block, once: workers failing the same way say so briefly."""
    if not w.error:
        return
    if w.error == b.last_error:
        out.append(Log(logging.ERROR, f"[{w.broker}] worker {w.id}: the same error again"))
        return
    b.last_error = w.error
    out.append(Log(logging.ERROR, f"[{w.broker}] worker {w.id} could not start:\n{w.error}"))

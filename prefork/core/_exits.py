"""How the supervisor tells of a worker's exit: its cause, the ``worker_exit`` or
``worker_crash`` event, the log lines, a start error printed once, and the one line of it a
rolled-back reload gives as its reason. Pure."""

from __future__ import annotations

import logging
import re

from prefork.core._events import Action, Emit, Log, TemplateExited
from prefork.core._payloads import WorkerExit
from prefork.core._roster import BrokerRecord, Cause, WorkerRecord
from prefork.core._templates import TemplateRecord

#: The longest line of a start error a reload's reason quotes.
MAX_ERROR_LINE = 200
#: A traceback's line naming its exception: ``ModuleNotFoundError: No module named 'x'``.
_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(: .*)?")


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


def failed(w: WorkerRecord, why: str) -> str:
    """Why ``w``, a replacement, ended its rolling replacement: ``worker 3 could not start
    before it was ready: ModuleNotFoundError: No module named 'x'`` (with the line of the
    error it sent that says what went wrong, when it sent one)."""
    booted = "" if w.ready_at is not None else " before it was ready"
    said = f": {error_line(w.error)}" if w.error else ""
    return f"worker {w.id} {why}{booted}{said}"


def error_line(error: str) -> str:
    """The line of a start error that says what went wrong, at most ``MAX_ERROR_LINE``
    characters: in a traceback, the last line that names an exception (a chain ends with the
    one raised last), or its first line if none does; in anything else, the first line."""
    lines = [line.rstrip() for line in error.splitlines() if line.strip()]
    line = lines[0].strip() if lines else ""
    if any(ln.startswith(("Traceback (most recent call last)", '  File "')) for ln in lines):
        line = next((ln for ln in reversed(lines) if _EXCEPTION_LINE.fullmatch(ln)), line)
    return line if len(line) <= MAX_ERROR_LINE else line[: MAX_ERROR_LINE - 3] + "..."


def template_exit(t: TemplateRecord, e: TemplateExited) -> str:
    """Why template ``t`` left, as ``e`` says: ``could not start: RuntimeError: ...``,
    ``exited with signal 9``, ``did not import within boot_timeout (60s)``..."""
    if t.failure:
        return t.failure
    if e.error:
        return f"could not start: {error_line(e.error)}"
    if e.signal is not None:
        return f"exited with signal {e.signal}"
    return "could not be forked" if e.exit_code is None else f"exited with code {e.exit_code}"

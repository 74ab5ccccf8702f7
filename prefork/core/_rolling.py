"""The bookkeeping of a rolling replacement on a broker's record: the queue of workers to
replace, and how a reload ends (done, or rolled back when a replacement fails). Pure: the
supervisor decides when; these keep the records and say what to log and emit.
"""

from __future__ import annotations

import logging

from prefork.core._events import Action, Emit, Log
from prefork.core._payloads import ReloadResult
from prefork.core._roster import BrokerRecord, WorkerRecord


def enqueue(b: BrokerRecord, w: WorkerRecord) -> bool:
    """Queue ``w`` for replacement; False if it is queued or being replaced already."""
    swapping = b.swap is not None and w.id in (b.swap.old, b.swap.new)
    if w.id in b.queue or swapping or not w.live:
        return False
    b.queue.append(w.id)
    return True


def end_swap_if_new(
    b: BrokerRecord, w: WorkerRecord, reason: str, now: float, out: list[Action]
) -> None:
    """``w`` failed; if it was the replacement being waited for, the whole rolling
    replacement ends: the old workers stay."""
    if b.swap is None or b.swap.new != w.id:
        return
    b.swap = None
    b.queue.clear()
    if b.reloading:
        out.append(Log(logging.ERROR, f"[{b.policy.name}] reload rolled back: {reason}"))
        end_reload(b, now, out, reason)
    else:
        out.append(Log(logging.ERROR, f"[{b.policy.name}] replacement failed: {reason}"))


def end_reload(b: BrokerRecord, now: float, out: list[Action], reason: str = "") -> None:
    """The reload of ``b`` is done (or failed, for ``reason``): record it, tell callbacks."""
    b.reloading = False
    record = b.reload
    assert record is not None  # the supervisor made it when the reload started
    record.result = "failed" if reason else "done"
    record.reason, record.replaced, record.finished = reason, b.replaced, now
    name = b.policy.name
    result = ReloadResult(name, b.generation, b.replaced, reason, record.duration(now))
    out.append(Emit(name, "reload_failed" if reason else "reload_done", (result,)))


def replace_if_over_memory(
    b: BrokerRecord, w: WorkerRecord, rss: int, now: float, grace: float, out: list[Action]
) -> None:
    """Queue a ready worker whose resident memory (``rss`` bytes) passed its broker's limit,
    once it has served ``grace`` seconds (a limit below what a fresh worker needs must not
    replace workers in a loop)."""
    limit = b.policy.max_memory
    if not limit or rss <= limit or w.ready_at is None or now - w.ready_at < grace:
        return
    if enqueue(b, w):
        mib = 1 << 20
        msg = (
            f"[{w.broker}] worker {w.id} (pid {w.pid}) uses {rss / mib:.0f} MiB, over "
            f"max_worker_memory ({limit / mib:.0f} MiB): replacing it"
        )
        out.append(Log(logging.WARNING, msg))

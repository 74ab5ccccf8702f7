"""The status snapshot of a broker and its workers (``Master.status``, ``prefork ctl status``),
read off the supervisor's records. Pure: the time comes in as ``now``.

What only the master can know (a worker's reported requests and connections, its resident
memory) is None here; the master fills it in.
"""

from __future__ import annotations

from collections.abc import Iterable

from prefork.core import _refork
from prefork.core._payloads import (
    BrokerStatus,
    ReforkStatus,
    ReloadStatus,
    TemplateStatus,
    WorkerStatus,
)
from prefork.core._rolling import ReloadRecord
from prefork.core._roster import BrokerRecord, WorkerRecord
from prefork.core._templates import TemplateRecord


def broker_status(
    b: BrokerRecord, workers: Iterable[WorkerRecord], live: int, now: float
) -> BrokerStatus:
    """``b``'s snapshot; ``workers`` are its records (every state), ``live`` its capacity."""
    return BrokerStatus(
        desired=b.desired,
        live=live,
        generation=b.generation,
        draining=b.draining,
        reloading=b.rolling.reloading,
        failures=b.failures,
        backoff_until=b.not_before,
        backoff=_seconds(max(0.0, b.not_before - now)),
        started=b.started,
        restarts=b.restarts,
        crashes=b.crashes,
        last_reload=reload_status(b.rolling.reload, now),
        workers=[worker_status(w, now) for w in sorted(workers, key=lambda w: w.id)],
        templates=[template_status(t, now) for _, t in sorted(b.templates.by_generation.items())],
        reforks=ReforkStatus(
            count=b.reforks,
            ago=None if b.last_refork is None else _seconds(now - b.last_refork),
            next_after=_refork.threshold(b),
        ),
    )


def template_status(t: TemplateRecord, now: float) -> TemplateStatus:
    return TemplateStatus(
        generation=t.generation,
        state=t.state.value,
        pid=None,
        uptime=_seconds(now - t.started),
        standby=None,
        promoted_from=t.promoted_from,
    )


def worker_status(w: WorkerRecord, now: float) -> WorkerStatus:
    return WorkerStatus(
        id=w.id,
        pid=w.pid,
        generation=w.generation,
        state=w.state.value,
        uptime=_seconds(now - w.started),
        requests=None,
        connections=None,
        rss=None,
    )


def reload_status(r: ReloadRecord | None, now: float) -> ReloadStatus | None:
    if r is None:
        return None
    return ReloadStatus(
        generation=r.generation,
        result=r.result,
        reason=r.reason,
        replaced=r.replaced,
        duration=_seconds(r.duration(now)),
        ago=_seconds(now - r.started),
    )


def _seconds(value: float) -> float:
    """To the millisecond: what a person or a script reads of a duration."""
    return round(value, 3)

"""The supervisor's records as plain data, and back: what one image of the master hands the
next across an in-place upgrade (``prefork ctl upgrade``: the master re-executes itself and
keeps its workers). Pure: dicts, lists, strings and numbers in and out; the master writes them
as JSON.

Field by field, by the dataclasses' own fields: a field the reading version does not know is
left out, one it has and the writer had not takes its default, so a newer prefork reads an
older one's records (``FORMAT`` changes only when a field changes meaning). The policies are
not carried: the new image builds them from the same command line. Times are the master's
monotonic clock, which an exec does not reset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from prefork.core._ledger import Ledger
from prefork.core._rolling import ReloadRecord, Rolling, Swap
from prefork.core._roster import BrokerRecord, WorkerRecord, WorkerState

#: The format of the records below (and of the master's whole hand-over document).
FORMAT = 1
#: The fields of a broker's record that are not its state (rebuilt by the new image).
_NOT_CARRIED = frozenset({"policy", "rolling", "templates"})
T = TypeVar("T")


def ledger_doc(ledger: Ledger) -> dict[str, Any]:
    """Every broker's and worker's record, and the ledger's phase, as plain data."""
    return {
        "stopping": ledger.stopping,
        "shutdown_at": ledger.shutdown_at,
        "brokers": {name: broker_doc(b) for name, b in ledger.brokers.items()},
        "workers": [worker_doc(w) for w in ledger.workers.values()],
    }


def adopt_ledger(ledger: Ledger, doc: Mapping[str, Any]) -> None:
    """Take ``doc`` (``ledger_doc``) into ``ledger``, whose brokers are declared already.

    Raises ``ValueError`` saying what does not fit: a broker or worker of a broker this
    master does not have, a field of the wrong type, a record that is not one.
    """
    try:
        brokers, workers = doc["brokers"], [worker_of(w) for w in doc["workers"]]
        unknown = sorted(set(brokers) - set(ledger.brokers))
        unknown += sorted({w.broker for w in workers} - set(ledger.brokers) - set(unknown))
        if unknown:
            raise ValueError(f"no broker named {', '.join(map(repr, unknown))} here")
        for name, record in brokers.items():
            adopt_broker(ledger.brokers[name], record)
        ledger.workers = {w.id: w for w in sorted(workers, key=lambda w: w.id)}
        ledger.stopping = _typed(doc["stopping"], bool)
        ledger.shutdown_at = doc["shutdown_at"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"the records do not fit: {type(exc).__name__}: {exc}") from None


def broker_doc(b: BrokerRecord) -> dict[str, Any]:
    doc = _fields(b, skip=_NOT_CARRIED)
    doc["rolling"] = rolling_doc(b.rolling)
    return doc


def adopt_broker(b: BrokerRecord, doc: Mapping[str, Any]) -> None:
    for name, value in _known(BrokerRecord, doc, skip=_NOT_CARRIED).items():
        setattr(b, name, _like(getattr(b, name), value, name))
    adopt_rolling(b.rolling, doc.get("rolling", {}))


def rolling_doc(r: Rolling) -> dict[str, Any]:
    return {
        "queue": list(r.queue),
        "swap": None if r.swap is None else _fields(r.swap),
        "reloading": r.reloading,
        "replaced": r.replaced,
        "reload": None if r.reload is None else _fields(r.reload),
    }


def adopt_rolling(r: Rolling, doc: Mapping[str, Any]) -> None:
    r.queue = [_typed(i, int) for i in doc.get("queue", [])]
    swap, reload = doc.get("swap"), doc.get("reload")
    r.swap = None if swap is None else Swap(**_known(Swap, swap))
    r.reloading = _typed(doc.get("reloading", False), bool)
    r.replaced = _typed(doc.get("replaced", 0), int)
    r.reload = None if reload is None else ReloadRecord(**_known(ReloadRecord, reload))


def worker_doc(w: WorkerRecord) -> dict[str, Any]:
    doc = _fields(w)
    doc["state"] = w.state.value
    return doc


def worker_of(doc: Mapping[str, Any]) -> WorkerRecord:
    fields = _known(WorkerRecord, doc)
    fields["state"] = WorkerState(fields.get("state", WorkerState.BOOTING.value))
    w = WorkerRecord(**fields)
    for value, kind in ((w.id, int), (w.pid, int), (w.broker, str), (w.generation, int)):
        _typed(value, kind)
    return w


def _fields(record: Any, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {
        f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name not in skip
    }


def _known(cls: type, doc: Mapping[str, Any], skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The entries of ``doc`` that are fields of the dataclass ``cls`` (others are left out:
    a field a newer or older prefork has and this one does not)."""
    names = {f.name for f in dataclasses.fields(cls)} - skip
    return {k: v for k, v in doc.items() if k in names}


def _like(current: Any, value: Any, name: str) -> Any:
    """``value`` if it has the type of the field's ``current`` value (an int for a float
    too)."""
    if isinstance(current, float) and isinstance(value, int | float):
        return value
    if not isinstance(value, type(current)):
        raise TypeError(f"{name} is {type(value).__name__}, not {type(current).__name__}")
    return value


def whole(value: Any) -> int:
    """``value`` if it is an int (not a bool); else ``ValueError``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a whole number")
    return value


def _typed(value: Any, kind: type[T]) -> T:
    if not isinstance(value, kind):
        raise TypeError(f"{value!r} is not {kind.__name__}")
    return value

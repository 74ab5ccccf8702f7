"""The health probes the master answers itself: ``/livez`` (the master's loop turns: a wedged
master fails it) and ``/readyz`` (whether it should be sent traffic). Pure: the answers from
the supervisor's phase and status.

Ready means: the master is serving (not in its shutdown delay, not stopping), and every broker
that listens on a socket has at least one ready worker and is not drained. Brokers without a
socket (queue consumers, load workers) take no traffic and do not count.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping

from prefork.core._payloads import BrokerStatus

#: What ``/readyz`` says of the master's phases (``Ledger.phase``) other than serving.
_PHASES = {"shutting down": "shutting down (--shutdown-delay)", "stopping": "stopping"}


def readiness(
    phase: str, status: Mapping[str, BrokerStatus], listening: Collection[str]
) -> dict[str, str]:
    """Why each broker of ``listening`` cannot take traffic now; empty when all can."""
    if phase != "serving":
        return {name: _PHASES.get(phase, phase) for name in listening}
    reasons = {}
    for name in listening:
        broker = status[name]
        if broker["draining"]:
            reasons[name] = "drained"
        elif broker["desired"] == 0:
            reasons[name] = "scaled to 0"
        elif not any(w["state"] == "ready" for w in broker["workers"]):
            reasons[name] = "no worker ready"
    return reasons


def readyz_body(reasons: Mapping[str, str]) -> bytes:
    """The JSON ``/readyz`` answers: ``{"ready": true}``, or false and the reasons."""
    doc: dict[str, object] = {"ready": not reasons}
    if reasons:
        doc["brokers"] = dict(reasons)
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"

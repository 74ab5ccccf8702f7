"""What ``prefork ctl`` prints: the status table and the one-line confirmations.

Pure: values in (the master's answers, protocol v1 of the control socket), text out. A field
the master left null (or out) prints as ``-``, so a master older or newer than this client
still gets a readable table rather than a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

#: The worker table's columns: title, the worker's field, how a value prints, right-aligned.
_COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    ("ID", "id", "text", True),
    ("PID", "pid", "text", True),
    ("GEN", "generation", "text", True),
    ("STATE", "state", "text", False),
    ("UPTIME", "uptime", "span", True),
    ("REQUESTS", "requests", "text", True),
    ("CONNS", "connections", "text", True),
    ("RSS MiB", "rss", "mib", True),
)
_INDENT = "  "
_GAP = "  "


def span(seconds: Any) -> str:
    """A time a person reads at a glance: ``42s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    if not _is_number(seconds):
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def took(seconds: Any) -> str:
    """A duration in milliseconds under a second (``14ms``), to a tenth of a second under a
    minute (``1.4s``), else as ``span``."""
    if _is_number(seconds) and seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if _is_number(seconds) and seconds < 60:
        return f"{seconds:.1f}s"
    return span(seconds)


def status_table(status: Mapping[str, Any]) -> str:
    """The STATUS object as text: a line about the master, then per broker a header line and
    one row per worker. Ends with a newline."""
    metrics = status.get("metrics")
    lines = [
        _GAP.join(
            (
                f"prefork master {_text(status.get('pid'))}",
                f"version {_text(status.get('version'))}",
                f"up {span(status.get('uptime'))}{_upgrades(status)}",
                f"control {_text(status.get('control'))}",
                f"metrics {'off' if metrics is None else metrics}",
            )
        )
    ]
    brokers = status.get("brokers")
    brokers = brokers if isinstance(brokers, Mapping) else {}
    rows = {name: _worker_rows(b) for name, b in brokers.items()}
    titles = [title for title, *_ in _COLUMNS]
    widths = [
        max(len(cells[i]) for cells in [titles, *(r for rs in rows.values() for r in rs)])
        for i in range(len(_COLUMNS))
    ]
    for name, broker in brokers.items():
        lines += ["", *_broker_header(name, broker)]
        if not rows[name]:
            lines.append(f"{_INDENT}(no workers)")
            continue
        for cells in [titles, *rows[name]]:
            lines.append(_INDENT + _row(cells, widths))
    return "\n".join(lines) + "\n"


def _upgrades(status: Mapping[str, Any]) -> str:
    """`` (upgraded 2x, this image up 5s)`` after the master's uptime, once it was upgraded."""
    upgrades, uptime = status.get("upgrades"), status.get("uptime")
    if not _is_number(upgrades) or upgrades < 1:
        return ""
    started, first = status.get("started"), status.get("master_started")
    image = "-"
    if _is_number(uptime) and _is_number(started) and _is_number(first):
        image = span(uptime - (started - first))
    return f" (upgraded {upgrades}x, this image up {image})"


def upgraded(upgrade: Mapping[str, Any]) -> str:
    """``upgraded in place: master 719 runs prefork 0.2.0 (was 0.1.0), upgrade 1, re-executed
    in 1.2s``"""
    return (
        f"upgraded in place: master {_text(upgrade.get('pid'))} runs prefork "
        f"{_text(upgrade.get('to'))} (was {_text(upgrade.get('from'))}), upgrade "
        f"{_text(upgrade.get('upgrades'))}, re-executed in {took(upgrade.get('took'))}"
    )


def reload_done(reload: Mapping[str, Any]) -> str:
    """``reload done: http generation 3, 2 worker(s) replaced in 1.4s``"""
    return (
        f"reload done: {_text(reload.get('broker'))} generation "
        f"{_text(reload.get('generation'))}, {_text(reload.get('replaced'))} worker(s) "
        f"replaced in {took(reload.get('duration'))}"
    )


def confirmation(request: Mapping[str, Any]) -> str:
    """The line that confirms an accepted reload (without --wait), drain, resume, scale, stop."""
    broker = request.get("broker")
    named = "every broker" if broker is None else broker
    match request["cmd"]:
        case "reload":
            return f"reload of {named} started (prefork ctl status shows how it goes)"
        case "drain":
            return f"draining {named}"
        case "resume":
            return f"resuming {named}"
        case "scale":
            return f"scaling {named} to {request['workers']} worker(s)"
        case "upgrade":
            return "every worker is being replaced (prefork ctl status shows how it goes)"
        case _:
            return "stopping the master: it drains every worker, then exits"


def _broker_header(name: str, broker: Any) -> list[str]:
    """``http  2/2 workers  gen 3  restarts 4  crashes 1  last reload: gen 3 done in 1.4s,
    12s ago``, and a second line with the reason when the last reload was rolled back."""
    b = broker if isinstance(broker, Mapping) else {}
    last = b.get("last_reload")
    last = last if isinstance(last, Mapping) else None
    running = last if last is not None and last.get("result") == "running" else None
    fields = [
        name,
        f"{_text(b.get('live'))}/{_text(b.get('desired'))} workers",
        f"gen {_text(b.get('generation'))}",
    ]
    if b.get("draining"):
        fields.append("draining")
    if running is not None:
        replaced, so_far = _text(running.get("replaced")), took(running.get("duration"))
        fields.append(f"reloading ({replaced} replaced, {so_far} so far)")
    elif b.get("reloading"):
        fields.append("reloading")
    fields += [f"restarts {_text(b.get('restarts'))}", f"crashes {_text(b.get('crashes'))}"]
    backoff = b.get("backoff")
    if _is_number(backoff) and backoff > 0:
        fields.append(f"backoff {took(backoff)} ({_text(b.get('failures'))} failures)")
    if running is None:
        fields.append(_last_reload(last))
    lines = [_GAP.join(fields)]
    if last is not None and last.get("result") == "failed" and last.get("reason"):
        lines.append(f"{_INDENT}rolled back: {last['reason']}")
    templates = b.get("templates")
    if isinstance(templates, list) and templates:
        lines.append(f"{_INDENT}templates: " + ", ".join(_template(t) for t in templates))
    reforks = b.get("reforks")
    if isinstance(reforks, Mapping) and (reforks.get("count") or reforks.get("next_after")):
        lines.append(f"{_INDENT}{_reforks(reforks)}")
    return lines


def _reforks(r: Mapping[str, Any]) -> str:
    """``reforks: 2, the last 5m ago; next after 1000 requests``"""
    said = f"reforks: {_text(r.get('count'))}"
    if r.get("ago") is not None:
        said += f", the last {span(r.get('ago'))} ago"
    following = r.get("next_after")
    return said + (f"; next after {_text(following)} requests" if following else "; no more")


def _template(template: Any) -> str:
    """``gen 3 ready (pid 4242, up 5m, standby 4250, from worker 7)``"""
    t = template if isinstance(template, Mapping) else {}
    said = f"gen {_text(t.get('generation'))} {_text(t.get('state'))}"
    more = ""
    if t.get("standby") is not None:
        more += f", standby {_text(t.get('standby'))}"
    if t.get("promoted_from") is not None:
        more += f", from worker {_text(t.get('promoted_from'))}"
    return f"{said} (pid {_text(t.get('pid'))}, up {span(t.get('uptime'))}{more})"


def _last_reload(last: Mapping[str, Any] | None) -> str:
    if last is None:
        return "no reload yet"
    generation = _text(last.get("generation"))
    duration = took(last.get("duration"))
    result = last.get("result")
    verb = {"done": "done in", "failed": "failed after"}.get(str(result), f"{result} in")
    return f"last reload: gen {generation} {verb} {duration}, {span(last.get('ago'))} ago"


def _worker_rows(broker: Any) -> list[list[str]]:
    workers = broker.get("workers") if isinstance(broker, Mapping) else None
    if not isinstance(workers, list):
        return []
    return [[_cell(w, key, kind) for _, key, kind, _ in _COLUMNS] for w in workers]


def _cell(worker: Any, key: str, kind: str) -> str:
    value = worker.get(key) if isinstance(worker, Mapping) else None
    if kind == "span":
        return span(value)
    if kind == "mib" and _is_number(value):
        return f"{value / 1048576:.1f}"
    return _text(value)


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    parts = [
        cell.rjust(width) if right else cell.ljust(width)
        for cell, width, (*_, right) in zip(cells, widths, _COLUMNS, strict=True)
    ]
    return _GAP.join(parts).rstrip()


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)

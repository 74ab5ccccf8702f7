"""The command line of ``prefork ctl``: its actions (status, reload, drain, resume, scale, stop,
upgrade), their arguments and the flags that name the master's control socket, with their
help. ``_ctl.py`` runs what they ask for.
"""

from __future__ import annotations

import argparse
from typing import Any

from prefork.core._roster import MAX_WORKERS


def add_parser(commands: Any) -> None:
    """Add ``ctl`` and its actions to the ``prefork`` command's sub-parsers."""
    ctl = commands.add_parser(
        "ctl",
        help="ask a running master for its status, or reload, drain, resume, scale, stop or "
        "upgrade it",
        description="Talk to a running master over its control socket. The socket is "
        "--control PATH; else the one beside --pid FILE (FILE with .pid replaced by .ctl); "
        "else the only live *.ctl socket in $XDG_RUNTIME_DIR/prefork/ (/tmp/prefork-UID/ "
        "when XDG_RUNTIME_DIR is unset). Exit codes: 0 done, 1 the master refused (or a "
        "reload was rolled back), 2 a usage error or no master reachable.",
    )
    _add_socket_flags(ctl, default=None)
    actions = ctl.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status",
        help="per broker: workers live and desired, reloads, restarts, crashes; per worker: "
        "pid, generation, state, uptime, requests, connections, memory",
        description="Print the master's status: a line about the master, then per broker a "
        "line (workers live/desired, generation, draining or reloading, restarts, crashes, "
        "backoff, the last reload: result, duration, how long ago) and a row per worker (id, "
        "pid, generation, state, uptime, requests served, open connections, RSS in MiB); "
        "'-' where a value is unknown.",
    )
    status.add_argument(
        "--json",
        action="store_true",
        help="print the master's STATUS object as JSON instead: pretty-printed, or one line "
        "per second with --watch",
    )
    status.add_argument(
        "--watch", action="store_true", help="redraw every second, like top, until Ctrl-C"
    )
    reload = actions.add_parser(
        "reload",
        help="replace every worker with new code, capacity never dropping",
        description="Start a rolling reload of BROKER (default: every broker).",
    )
    reload.add_argument(
        "--wait",
        action="store_true",
        help="wait for the reload: exit 0 when it is done, 1 with the reason when it was "
        "rolled back",
    )
    _add_broker(reload)
    drain = actions.add_parser(
        "drain",
        help="let the workers finish their work and leave; sockets stay bound",
        description="Drain BROKER (default: every broker); resume brings the workers back.",
    )
    _add_broker(drain)
    resume = actions.add_parser(
        "resume",
        help="bring drained workers back",
        description="Resume BROKER (default: every broker) after a drain.",
    )
    _add_broker(resume)
    scale = actions.add_parser(
        "scale", help="run N workers of BROKER", description="Run N workers of BROKER."
    )
    scale.add_argument("broker", metavar="BROKER", help="the broker to scale")
    scale.add_argument(
        "workers", metavar="N", type=_worker_count, help="how many workers (0 or more)"
    )
    actions.add_parser(
        "stop",
        help="drain every worker, then the master exits",
        description="Stop the master: it drains every worker, then exits.",
    )
    upgrade = actions.add_parser(
        "upgrade",
        help="re-execute the master in place on the installed prefork (same pid, sockets and "
        "workers), then replace every worker as a reload does",
        description="Upgrade the master in place: it checks that the installed prefork "
        "starts with its command line (refused with the error if not: nothing changes), "
        "re-executes itself keeping its pid, listening sockets, workers, metric totals and "
        "control socket, then replaces every worker as a reload does. Only for a master "
        "started by prefork serve.",
    )
    upgrade.add_argument(
        "--wait",
        action="store_true",
        help="wait for the workers to be replaced too: exit 0 when done, 1 with the reason "
        "when the reload was rolled back",
    )
    for parser in actions.choices.values():  # the socket flags may come after the action too
        _add_socket_flags(parser, default=argparse.SUPPRESS)


def _add_socket_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--control",
        metavar="PATH",
        default=default,
        help="the master's control socket (as given to the master's --control)",
    )
    where.add_argument(
        "--pid",
        metavar="FILE",
        default=default,
        help="the master's pid file: its control socket is beside it (FILE with .pid "
        "replaced by .ctl)",
    )


def _add_broker(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "broker", nargs="?", default=None, metavar="BROKER", help="default: every broker"
    )


def _worker_count(text: str) -> int:
    # ASCII digits only (no sign, no point, no spaces), and few: int() of thousands raises.
    digits = text.lstrip("0") or "0"
    whole = text.isascii() and text.isdigit() and len(digits) <= len(str(MAX_WORKERS))
    if not whole or int(digits) > MAX_WORKERS:
        shown = repr(text) if len(text) <= 20 else repr(text[:17] + "...")
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 0 to {MAX_WORKERS}, got {shown}"
        )
    return int(digits)

"""The command line: ``prefork serve APP``, ``prefork load URL`` and ``prefork ctl ACTION``.
Parses, validates, runs; returns the exit code.

Every bad flag or value ends with one line on stderr (``prefork: error: ...``) and exit
code 2, before anything binds or forks.

Each command imports what it runs only when it runs: ``prefork load``'s start-up is CPU its
figures pay for, so it must not import the HTTP worker or ``serve``'s set-up (a test holds
that: tests/process/test_load_imports.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prefork._flags import Parser, add_options, given
from prefork.core._options import ConfigError
from prefork.core._version import VERSION
from prefork.load import LoadConfig

__all__ = ["add_options", "build_parser", "given", "main"]
#: The commands, each built into the parser only when it runs (or for ``--help``).
COMMANDS = ("serve", "load", "ctl")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every command, or only ``command``'s."""
    parser = Parser(
        prog="prefork",
        description="A pre-fork server: a master that binds the sockets and supervises workers.",
    )
    parser.add_argument("-v", "--version", action="version", version=f"prefork {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in (None, "serve"):
        from prefork import _serve_command

        _serve_command.add_parser(commands)
    if command in (None, "load"):
        load = commands.add_parser(
            "load",
            help="load an HTTP server from several worker processes (like wrk and wrk2); "
            "load merge: merge runs",
            description="Send requests to URL for a while from worker processes (closed "
            "loop, or an open loop at --rate) and print what came back: requests/s, latency "
            "percentiles, errors and statuses.",
            epilog="prefork load merge RUN.json... merges runs' --json documents into one, "
            "exactly (prefork load merge --help).",
        )
        add_options(load, LoadConfig)
    if command in (None, "ctl"):
        from prefork.ops import _ctl

        _ctl.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:2] == ["load", "merge"]:  # a URL is never "merge": the runs to merge follow
        from prefork.load._merge import main as merge_runs

        return merge_runs(words[2:])
    parser = build_parser(words[0] if words[:1] and words[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command == "load":
        return _load(args)
    if args.command == "ctl":
        from prefork.ops import _ctl

        return _ctl.main(args)
    from prefork import _serve_command

    return _serve_command.main(parser, args, argv)


def _load(args: argparse.Namespace) -> int:
    """``prefork load``: 0, 1 (``--fail-on-error`` and a request failed) or 2 (bad input)."""
    from prefork.load._run import run as run_load

    try:
        config = LoadConfig.from_options(given(LoadConfig, vars(args)))
        return run_load(config)
    except ConfigError as exc:
        print(f"prefork: error: {exc}", file=sys.stderr)
        return 2

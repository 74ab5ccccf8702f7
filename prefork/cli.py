"""The command line: ``prefork serve APP``. Parses, validates, runs; returns the exit code.

Every bad flag or value ends with one line on stderr (``prefork: error: ...``) and exit
code 2, before anything binds or forks.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from prefork import _sockets
from prefork._master import Master
from prefork.config import ConfigError
from prefork.http import HTTPConfigError, HTTPWorker
from prefork.http._config import add_serve_arguments, worker_options_from_args

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
DEFAULT_BIND = "127.0.0.1:8000"
_APP_HINT = "check APP and --app-dir"


def default_workers() -> int:
    """The number of CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other refusal of ours."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"prefork: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="prefork",
        description="A pre-fork server: a master that binds the sockets and supervises workers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve an ASGI app over HTTP/1.1 with several worker processes",
        description="Serve an ASGI app. Signals to the master: HUP reload, TERM drain, "
        "USR2 resume, INT/QUIT stop, TTIN/TTOU one worker more/fewer, USR1 reopen logs.",
    )
    serve.add_argument(
        "-b",
        "--bind",
        action="append",
        metavar="ADDR",
        help=f"host:port, [v6]:port, unix:PATH or fd://N; repeatable (default {DEFAULT_BIND})",
    )
    serve.add_argument(
        "-w",
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: CPUs)",
    )
    serve.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="kill and replace a worker silent this long (0 = off; default %(default)s)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="time a stopping worker gets to finish before SIGKILL (default %(default)s)",
    )
    serve.add_argument(
        "--boot-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="time a new worker gets to become ready (default %(default)s)",
    )
    serve.add_argument(
        "--recycle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="replace each worker after about this long, one at a time (0 = never)",
    )
    serve.add_argument(
        "--backlog",
        type=int,
        default=2048,
        metavar="N",
        help="listen queue length (default %(default)s)",
    )
    serve.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="log level (default %(default)s)"
    )
    serve.add_argument("--pid", metavar="FILE", help="write the master's pid to FILE")
    serve.add_argument(
        "--preload",
        action="store_true",
        help="import the app in the master (shared memory; a reload then keeps the old code)",
    )
    add_serve_arguments(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    try:
        master = _serve_master(args)
        return master.run()
    except (ConfigError, HTTPConfigError) as exc:
        print(f"prefork: error: {exc}", file=sys.stderr)
        return 2


def _serve_master(args: argparse.Namespace) -> Master:
    options = worker_options_from_args(args)
    workers = default_workers() if args.workers is None else args.workers
    binds = args.bind or _sockets.systemd_fds(os.environ, os.getpid()) or [DEFAULT_BIND]
    app_dir = os.path.abspath(args.app_dir)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    _check_app(args.app, args.preload)
    master = Master(graceful_timeout=args.graceful_timeout, pidfile=args.pid)
    master.broker(
        "http",
        HTTPWorker,
        workers=workers,
        listen=binds,
        timeout=args.timeout,
        boot_timeout=args.boot_timeout,
        recycle_rate=args.recycle,
        backlog=args.backlog,
        **options,
    )
    return master


def _check_app(app: str, preload: bool) -> None:
    """Locate the app's top-level package (import the module with ``preload``) so a typo
    fails before any fork. Only the top level: finding ``pkg.main`` would import ``pkg`` here,
    and workers would inherit that old code through every reload."""
    module = app.partition(":")[0]
    top = module.partition(".")[0]
    try:
        if preload:
            importlib.import_module(module)
            return
        found = importlib.util.find_spec(top) if top else None
    except Exception as exc:
        raise ConfigError(f"cannot import app {app!r}: {type(exc).__name__}: {exc}") from None
    if found is None:
        missing = top or module
        raise ConfigError(f"cannot import app {app!r}: no module named {missing!r}; {_APP_HINT}")
    if module != top and found.submodule_search_locations is None:
        raise ConfigError(
            f"cannot import app {app!r}: ModuleNotFoundError: {top!r} is not a package; "
            + _APP_HINT
        )

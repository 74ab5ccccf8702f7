"""``prefork serve APP``: its own options, the config file under the flags, and the master it
runs. Imported only for ``serve``: the HTTP worker and the master's set-up are what
``prefork load`` and ``prefork ctl`` must not pay for at start-up.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefork._flags import add_options, given
from prefork.config import BrokerConfig, MasterConfig
from prefork.core._options import (
    FOREIGN_FLAGS,
    ConfigError,
    check_fields,
    maybe_text,
    one_of,
    option,
    shown,
    switch,
    whole,
)
from prefork.http import HTTPConfig, HTTPWorker
from prefork.http._app import import_app, import_module
from prefork.master import _process, _sockets, _upgrade, _watch
from prefork.master import _setup as setup
from prefork.master._app_check import check_app
from prefork.master._loop import Master

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
DEFAULT_BIND = "127.0.0.1:8000"
#: What ``prefork serve`` takes, in the order ``--help`` lists it (``ServeOptions`` below).
SERVE_CONFIGS: tuple[type, ...] = (BrokerConfig, MasterConfig, HTTPConfig, _watch.ReloadConfig)
#: Where ``prefork serve`` differs from the API's defaults (applied in ``_serve_master``).
SERVE_DEFAULTS = {
    "workers": "$WEB_CONCURRENCY, else the usable CPUs; 1 with --reload",
    "listen": f"{DEFAULT_BIND}, or systemd's LISTEN_FDS",
    "control": "auto",
}


def _port(name: str, value: Any) -> Any:
    if value is not None and (not isinstance(value, int) or not 0 <= value <= 65535):
        raise ConfigError(f"{name} must be a port number 0-65535, got {shown(value)}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """What only the command line takes: spellings of ``--bind``, the process set-up done
    before the master starts, logging, and the config file. Declared like every option."""

    host: str | None = option(
        None, "bind this host (uvicorn's spelling; with --port)", maybe_text, "--host"
    )
    port: int | None = option(
        None,
        "bind this port (with --host, default 127.0.0.1)",
        _port,
        "--port",
        metavar="PORT",
        parse=int,
    )
    uds: str | None = option(
        None, "bind this unix socket path", maybe_text, "--uds", metavar="PATH"
    )
    fd: int | None = option(
        None,
        "serve this inherited socket fd",
        whole(0, _sockets.MAX_FD, optional=True),
        "--fd",
        metavar="N",
        parse=int,
    )
    chdir: str | None = option(
        None,
        "change to this directory before loading the app",
        maybe_text,
        "--chdir",
        metavar="DIR",
    )
    env_file: str | None = option(
        None,
        "read KEY=VALUE lines into the environment first",
        maybe_text,
        "--env-file",
        metavar="FILE",
    )
    log_level: str = option(
        "info", "log level", one_of(*LOG_LEVELS), "--log-level", choices=LOG_LEVELS
    )
    log_config: str | None = option(
        None,
        "logging config: .json or .toml (dictConfig), or .ini (fileConfig)",
        maybe_text,
        "--log-config",
        metavar="FILE",
    )
    error_logfile: str | None = option(
        None,
        "write the log to FILE ('-': stderr)",
        maybe_text,
        "--error-logfile",
        "--log-file",
        metavar="FILE",
    )
    access_logfile: str | None = option(
        None,
        "log one line per request to FILE ('-': stdout)",
        maybe_text,
        "--access-logfile",
        metavar="FILE",
    )
    config: str | None = option(
        None,
        "read options from a TOML file ([tool.prefork] of a pyproject.toml)",
        maybe_text,
        "-c",
        "--config",
        metavar="FILE",
    )
    check_config: bool = option(
        False, "check the options and the app, then exit", switch, "--check-config", parse=None
    )
    print_config: bool = option(
        False, "print the options in effect, then exit", switch, "--print-config", parse=None
    )

    def __post_init__(self) -> None:
        check_fields(self)


def add_parser(commands: Any) -> None:
    """Add ``serve`` to the command line's sub-commands (``commands``, argparse's)."""
    serve = commands.add_parser(
        "serve",
        foreign=FOREIGN_FLAGS,
        help="serve an ASGI app over HTTP/1.1 with several worker processes",
        description="Serve an ASGI app. Signals to the master: HUP reload, TERM drain, "
        "USR2 resume, INT/QUIT stop, TTIN/TTOU one worker more/fewer, USR1 reopen logs.",
    )
    for config in (*SERVE_CONFIGS, ServeOptions):
        add_options(serve, config, SERVE_DEFAULTS)


def main(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None
) -> int:
    """``prefork serve``: runs the master; the exit code (2: bad input)."""
    started_in = os.getcwd()  # before --chdir: where an in-place upgrade starts again
    try:
        args = _with_config_file(parser, args, argv)
        cli = ServeOptions(**given(ServeOptions, vars(args)))
        setup.configure_logging(
            cli.log_level, cli.log_config, cli.error_logfile, cli.access_logfile
        )
        if cli.check_config:  # the check of an upgrade: can this prefork take the state over?
            _upgrade.check_format(os.environ)
        master, effective = _serve_master(args, cli)
        if cli.check_config:
            _upgrade.check_brokers(os.environ, master.listeners())
        master.relaunch_as(_upgrade.Relaunch.of_this_process(started_in, argv))
        if cli.print_config:
            print(setup.dump_options((*SERVE_CONFIGS, ServeOptions), effective), end="")
            return 0
        if cli.check_config:
            for line in master.template_choices().values():
                print(f"prefork: {line}", file=sys.stderr)
            print("prefork: the options and the app are fine", file=sys.stderr)
            return 0
        return master.run()
    except ConfigError as exc:
        print(f"prefork: error: {exc}", file=sys.stderr)
        return 2


def _with_config_file(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Options from the config file (or ./pyproject.toml's [tool.prefork]) under the flags."""
    path = args.config if "config" in args else setup.default_config_file()
    if path is None:
        return args
    serve = _serve_parser(parser)
    serve.set_defaults(**setup.read_config_file(path, (*SERVE_CONFIGS, ServeOptions)))
    return parser.parse_args(argv)


def _serve_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``serve`` command's own parser (where the config file's values go)."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["serve"]  # type: ignore[no-any-return]


def _serve_master(args: argparse.Namespace, cli: ServeOptions) -> tuple[Master, dict[str, Any]]:
    """The master ``prefork serve`` runs, and every option in effect (for --print-config)."""
    if cli.env_file is not None:
        setup.load_env_file(cli.env_file, os.environ)
    if cli.chdir is not None:
        setup.change_dir(cli.chdir)
    values = vars(args)
    http = given(HTTPConfig, values)
    if "app" not in http:
        raise ConfigError("no APP given; name it (module:attr) or set app in the config file")
    if cli.access_logfile is not None:
        http["access_log"] = True
    app = HTTPConfig.from_options(http)  # a bad value is refused before the app is looked for
    reload = _watch.ReloadConfig.from_options(given(_watch.ReloadConfig, values))
    broker = given(BrokerConfig, values)
    if reload.reload:  # a development server: one worker unless told (not $WEB_CONCURRENCY)
        broker.setdefault("workers", 1)
    broker.setdefault("workers", setup.default_workers(os.environ))
    if broker["workers"] < 1:
        raise ConfigError(f"--workers must be 1 or more, got {broker['workers']}")
    extra = setup.binds(cli.host, cli.port, cli.uds, cli.fd)
    if extra or "listen" not in broker:
        broker["listen"] = [*broker.get("listen", ()), *extra] or (
            _sockets.systemd_fds(os.environ, os.getpid()) or [DEFAULT_BIND]
        )
    app_dir = os.path.abspath(app.app_dir)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    master_options = given(MasterConfig, values)
    master_options.setdefault("control", "auto")  # prefork ctl finds it (the API's: off)
    master = Master(**master_options)
    http_broker = master.broker("http", HTTPWorker, **broker, **http)
    config = http_broker.config
    watch = _watch.plan(reload, app_dir) if reload.reload else None
    if watch is not None:
        _watch.watch(master, http_broker, watch)
    preload = config.preload and isinstance(app.app, str)
    # The options are printed even when the app is broken; an upgrade's new image does not
    # import the app again (its check just did: --check-config), unless the master preloads.
    upgrading = _upgrade.ENV in os.environ
    if not cli.print_config and (preload or not upgrading):
        check_app(
            str(app.app),
            functools.partial(import_app, app),
            identity=_process.identity(master.config.user, master.config.group),
            timeout=config.boot_timeout,
            preload=functools.partial(import_module, app) if preload else None,
            traceback_to=None if cli.check_config else sys.stderr,
        )
    if watch is not None and not (cli.print_config or cli.check_config):
        _watch.announce(watch)  # the first line of the log
    return master, {**values, **master_options, **broker, **http}

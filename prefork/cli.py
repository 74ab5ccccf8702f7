"""The command line: ``prefork serve APP``, ``prefork load URL`` and ``prefork ctl ACTION``.
Parses, validates, runs; returns the exit code.

Every bad flag or value ends with one line on stderr (``prefork: error: ...``) and exit
code 2, before anything binds or forks.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from prefork.config import BrokerConfig, MasterConfig
from prefork.core._options import (
    FOREIGN_FLAGS,
    ConfigError,
    check_fields,
    declared,
    maybe_text,
    one_of,
    option,
    shown,
    switch,
    whole,
)
from prefork.core._version import VERSION
from prefork.http import HTTPConfig, HTTPWorker
from prefork.http._app import import_app, import_module
from prefork.load import LoadConfig
from prefork.load._merge import main as merge_runs
from prefork.load._run import run as run_load
from prefork.master import _process, _sockets, _upgrade, _watch
from prefork.master import _setup as setup
from prefork.master._app_check import check_app
from prefork.master._loop import Master
from prefork.ops import _ctl

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


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other refusal of ours, flags are
    never abbreviated, and a command's unknown flag is named as such (with a close match)
    rather than its value being taken for APP."""

    def __init__(self, *args: Any, foreign: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.foreign = foreign or {}  # other servers' flags, each with what to do instead
        self.bare: dict[str, tuple[str, tuple[str, ...]]] = {}  # flag -> its bare value, choices

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"prefork: error: {message}; see '{self.prog} --help'\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if args is not None and self.prog != "prefork":  # a command's own arguments
            self._refuse_unknown_flags(args)
            args = self._bare_values(args)
        return super().parse_known_args(args, namespace)

    def _bare_values(self, args: Sequence[str]) -> list[str]:
        """``--template APP`` is ``--template=on APP``: a flag whose value is optional takes
        the next word only if it is one of its choices (argparse would take APP for it)."""
        out = list(args)
        for i, arg in enumerate(out):
            if arg == "--":
                break
            if arg in self.bare:
                value, choices = self.bare[arg]
                if i + 1 == len(out) or out[i + 1] not in choices:
                    out[i] = f"{arg}={value}"
        return out

    def _refuse_unknown_flags(self, args: Sequence[str]) -> None:
        known = self._option_string_actions
        commands = {
            name
            for action in self._actions
            if isinstance(action, argparse._SubParsersAction)
            for name in action.choices
        }
        for arg in args:
            if arg == "--" or arg in commands:  # a sub-command checks its own flags
                return
            if not arg.startswith("-") or arg == "-" or arg[1:2].isdigit():
                continue
            flag = arg.partition("=")[0] if arg.startswith("--") else arg[:2]
            if flag not in known and flag in self.foreign:
                self.error(f"unknown flag {flag}: {self.foreign[flag]}")
            if flag not in known:
                close = sorted(k for k in known if k.startswith(flag))[:3] or (
                    difflib.get_close_matches(flag, list(known), n=1)
                )
                hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                self.error(f"unknown flag {flag}{hint}")


def add_options(
    parser: argparse.ArgumentParser, config: type, shown: Mapping[str, str] | None = None
) -> None:
    """Add a flag for every option of ``config`` that declares one; nothing is restated: the
    help, the default shown and the parsing all come from the declaration. An option left
    out is absent from the parsed namespace, so the config's own default applies (``shown``
    names the defaults a command applies itself)."""
    for f, meta in declared(config):
        if not meta.flags:
            continue
        if not meta.flags[0].startswith("-"):  # APP: may come from the config file instead
            parser.add_argument(
                f.name, nargs="?", default=argparse.SUPPRESS, metavar=meta.metavar, help=meta.help
            )
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        default = (shown or {}).get(f.name, f.default)
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        if isinstance(default, str):
            default = default.replace("%", "%%")  # argparse formats help with %
        hide = default in (None, False, "")
        kwargs["help"] = meta.help + ("" if hide else f" (default {default})")
        if meta.parse is None:
            kwargs["action"] = argparse.BooleanOptionalAction if meta.negatable else "store_true"
        else:
            kwargs["type"] = meta.parse
            kwargs["metavar"] = meta.metavar
            if meta.choices:
                kwargs["choices"] = meta.choices
            if meta.bare is not None:  # ``_Parser`` rewrites ``--flag APP`` (``_bare_values``)
                kwargs.update(nargs="?", const=meta.bare)
                bare = getattr(parser, "bare", {})
                bare.update(dict.fromkeys(meta.flags, (meta.bare, meta.choices)))
            if meta.repeat:
                kwargs["action"] = "append"
        parser.add_argument(*meta.flags, **kwargs)


def given(config: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``config`` that were given on the command line."""
    return {
        f.name: values[f.name] for f, meta in declared(config) if meta.flags and f.name in values
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="prefork",
        description="A pre-fork server: a master that binds the sockets and supervises workers.",
    )
    parser.add_argument("-v", "--version", action="version", version=f"prefork {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        foreign=FOREIGN_FLAGS,
        help="serve an ASGI app over HTTP/1.1 with several worker processes",
        description="Serve an ASGI app. Signals to the master: HUP reload, TERM drain, "
        "USR2 resume, INT/QUIT stop, TTIN/TTOU one worker more/fewer, USR1 reopen logs.",
    )
    for config in (*SERVE_CONFIGS, ServeOptions):
        add_options(serve, config, SERVE_DEFAULTS)
    load = commands.add_parser(
        "load",
        help="load an HTTP server from several worker processes (like wrk and wrk2); "
        "load merge: merge runs",
        description="Send requests to URL for a while from worker processes (closed loop, "
        "or an open loop at --rate) and print what came back: requests/s, latency "
        "percentiles, errors and statuses.",
        epilog="prefork load merge RUN.json... merges runs' --json documents into one, "
        "exactly (prefork load merge --help).",
    )
    add_options(load, LoadConfig)
    _ctl.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:2] == ["load", "merge"]:  # a URL is never "merge": the runs to merge follow
        return merge_runs(words[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "load":
        return _load(args)
    if args.command == "ctl":
        return _ctl.main(args)
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


def _load(args: argparse.Namespace) -> int:
    """``prefork load``: 0, 1 (``--fail-on-error`` and a request failed) or 2 (bad input)."""
    try:
        config = LoadConfig.from_options(given(LoadConfig, vars(args)))
        return run_load(config)
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

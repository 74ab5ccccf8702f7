"""The command line's flags, declared once: every option's flag, help, default and parsing
come from its declaration (``prefork.core._options``). Shared by ``prefork load``, ``prefork
serve`` and ``prefork ctl``, and cheap to import: ``prefork load`` must not pay for the server.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from prefork.core._options import declared


class Parser(argparse.ArgumentParser):
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
            if meta.bare is not None:  # ``Parser`` rewrites ``--flag APP`` (``_bare_values``)
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

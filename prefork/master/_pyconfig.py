"""A gunicorn config file (``gunicorn.conf.py``) given to ``-c``, read without running it.

gunicorn executes its config file; prefork reads TOML, and never runs a config file's code. So
of a ``.py`` file it reads what is data: ``NAME = value`` lines at the top level whose value is
a literal (``ast.literal_eval``: strings, numbers, booleans, lists), for the settings prefork
has, under gunicorn's names. Imports and docstrings are passed over, and so is a setting
prefork does not have when it is off (None or False). Everything else is refused with its line
and what to write instead: a computed value (``workers = multiprocessing.cpu_count() * 2 + 1``),
a statement (``if``, a server hook's ``def``), another setting. Pure: no I/O.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from prefork.core._options import FOREIGN_FLAGS, ConfigError, shown

#: gunicorn's names for settings prefork spells otherwise; the rest are alike, dashes for
#: underscores (``bind``, ``workers``, ``timeout``, ``graceful_timeout``, ``max_requests``,
#: ``backlog``, ``user``, ``umask``, ``limit_request_line``, ``certfile``...).
RENAMED = {
    "wsgi_app": "app",
    "keepalive": "keep-alive",
    "accesslog": "access-logfile",
    "access_log_format": "access-logformat",
    "errorlog": "error-logfile",
    "loglevel": "log-level",
    "logconfig": "log-config",
    "pidfile": "pid",
    "preload_app": "preload",
    "proc_name": "name",
    "ciphers": "ssl-ciphers",
}
#: A value to show in "write a whole number (workers = 4)", by what the setting takes.
_EXAMPLES = {"a whole number": "4", "a number": "30", "true or false": "True"}
_NOT_RUN = "prefork reads a gunicorn config file (.py) without running it"


def prefork_key(name: str) -> str:
    """The config-file key of prefork's option that gunicorn's setting ``name`` is."""
    return RENAMED.get(name, name.replace("_", "-"))


def read(path: str, text: str, wanted: Mapping[str, str]) -> dict[str, tuple[int, Any]]:
    """The settings in ``text``, the source of the gunicorn config file ``path``: gunicorn's
    name -> (line, value). ``wanted`` maps each prefork key to what it takes ("a whole number",
    "a string"...). Raises ``ConfigError`` naming the file, the line and what to write."""
    try:
        tree = ast.parse(text, path)
    except SyntaxError as exc:
        raise ConfigError(
            f"config file {path!r} is not valid Python: {exc.msg} (line {exc.lineno})"
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # a NUL byte, deep nesting
        raise ConfigError(f"config file {path!r} cannot be read as Python: {exc}") from None
    settings: dict[str, tuple[int, Any]] = {}
    for node in tree.body:
        where = f"config file {path!r} line {node.lineno}"
        if isinstance(node, ast.Import | ast.ImportFrom) or _is_text(node):
            continue
        name, value_node = _assignment(node)
        if name is None or value_node is None:
            raise ConfigError(f"{where}: {_refusal(node, text)}")
        value = _literal(value_node)
        key = prefork_key(name)
        if key not in wanted:
            if value is None or value is False:  # off: prefork does not do it either
                continue
            hint = FOREIGN_FLAGS.get("--" + name.replace("_", "-"), "remove the line")
            raise ConfigError(f"{where}: prefork has no setting {name!r}; {hint}")
        if value is _COMPUTED:
            source = " ".join(str(ast.get_source_segment(text, value_node)).split())
            source = source if len(source) <= 50 else source[:47] + "..."
            example = _EXAMPLES.get(wanted[key], "'...'")
            raise ConfigError(
                f"{where}: {name} = {source} is computed, and {_NOT_RUN}; write "
                f"{wanted[key]} ({name} = {example}), or remove the line for prefork's default"
            )
        if value is not None:  # gunicorn's "not set"
            settings[name] = (node.lineno, list(value) if isinstance(value, tuple) else value)
    return settings


_COMPUTED = object()  # what _literal returns for a value that is not a literal


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _COMPUTED


def _is_text(node: ast.stmt) -> bool:
    """A docstring, or any other bare string."""
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    """``NAME = value`` (or ``NAME: type = value``): the name and the value's node."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target: ast.expr = node.targets[0]
    elif isinstance(node, ast.AnnAssign):
        target = node.target
    else:
        return None, None
    return (target.id if isinstance(target, ast.Name) else None), node.value


def _refusal(node: ast.stmt, text: str) -> str:
    """Why the statement ``node`` cannot be read, and what to do."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return f"def {node.name}(...): prefork runs no gunicorn server hooks; remove it"
    first = text.splitlines()[node.lineno - 1].strip()
    return (
        f"{shown(first, 50)} cannot be read: {_NOT_RUN}, so only NAME = value lines and "
        "imports can be in it; write the values themselves, or the settings in TOML"
    )

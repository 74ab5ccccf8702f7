"""Finding the app: import ``module:attr``, call a factory, and tell an ASGI app from a WSGI app
or a factory by its shape. Every mistake in naming the app is one ``AppImportError`` line that
says what was looked for (uvicorn's ``Attribute "x" not found in module "m"``); an exception
raised by the user's own code (on import, in a factory) propagates as it is.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from types import ModuleType
from typing import Any, Literal

from prefork.core._options import shown
from prefork.http._config import HTTPConfig

#: What an app looks like: ``asgi`` (an ``async`` callable, or one taking scope, receive and
#: send), ``wsgi`` (a plain callable taking environ and start_response), ``factory`` (a plain
#: callable taking no argument), ``unknown`` (anything else, served as ASGI).
Interface = Literal["asgi", "wsgi", "factory", "unknown"]
#: How many positional arguments each kind of app is called with, in the order tried.
_SHAPES: tuple[tuple[int, Interface], ...] = ((3, "asgi"), (2, "wsgi"), (0, "factory"))
_APPS = {"asgi": "an ASGI app", "wsgi": "a WSGI app"}
_CHECK_APP = "check APP and --app-dir"


class AppImportError(ImportError):
    """The APP named in the options cannot be found or is not an app prefork serves (as
    ``--interface`` asks); the message is one line naming what was looked for."""


def _is_async(app: object) -> bool:
    """Whether ``app`` is surely ASGI: awaited when called (an ``async`` function or
    ``__call__``, or a class whose instances are awaited)."""
    if isinstance(app, type):
        return hasattr(app, "__await__")
    return inspect.iscoroutinefunction(app) or (
        callable(app) and inspect.iscoroutinefunction(type(app).__call__)
    )


def interface_of(app: object) -> Interface:
    """Which kind of callable ``app`` is, by its shape alone (nothing is called)."""
    if _is_async(app):
        return "asgi"
    try:
        signature = inspect.signature(app)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a builtin without one, or not callable
        return "unknown"
    for arguments, kind in _SHAPES:
        try:
            signature.bind(*range(arguments))
        except TypeError:
            continue
        return kind
    return "unknown"


def import_module(config: HTTPConfig) -> ModuleType:
    """The module of ``config.app`` (a ``"module:attr"`` string), imported with
    ``config.app_dir`` first on ``sys.path``. Raises ``AppImportError`` when there is no such
    module, and what the module's own code raises (a missing dependency too) as it is."""
    spec = str(config.app)
    if config.app_dir:
        path = os.path.abspath(config.app_dir)
        if path not in sys.path:
            sys.path.insert(0, path)
    module_name = spec.partition(":")[0]
    if not all(module_name.split(".")):
        raise AppImportError(f"cannot import app {spec!r}: {module_name!r} is not a module name")
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name != missing and not module_name.startswith(missing + "."):
            raise  # the module exists, but one of its own imports is missing: the user's error
        why = f" ({exc.msg.partition('; ')[2]})" if "; " in exc.msg else ""
        raise AppImportError(
            f"cannot import app {spec!r}: no module named {missing!r}{why}; {_CHECK_APP}"
        ) from None


def import_app(config: HTTPConfig) -> Any:
    """The ASGI app ``config.app`` names (``"module:attr"``, ``attr`` may be dotted), made by
    calling it when ``config.factory``. Raises ``AppImportError`` with a one-line reason when
    the module or attribute is missing or what was found is not an ASGI app (or factory), and
    what the user's code raises (on import, in the factory) as it is."""
    spec = config.app
    if not isinstance(spec, str):
        return _checked(spec, spec, config.factory, config.interface)
    module_name, _, attrs = spec.partition(":")
    app: Any = import_module(config)
    try:
        for attr in attrs.split("."):
            app = getattr(app, attr)
    except AttributeError:
        raise AppImportError(
            f"cannot import app {spec!r}: attribute {attrs!r} not found in module "
            f"{module_name!r}; {_CHECK_APP}"
        ) from None
    return _checked(spec, app, config.factory, config.interface)


def served_interface(app: object, interface: str) -> Literal["asgi", "wsgi"]:
    """How ``app`` is served under ``--interface interface``: ``auto`` goes by its shape
    (``interface_of``; a callable of no readable shape is served as ASGI)."""
    if interface == "wsgi" or (interface == "auto" and interface_of(app) == "wsgi"):
        return "wsgi"
    return "asgi"


def _checked(spec: object, found: object, factory: bool, interface: str = "auto") -> Any:
    """The app from ``found``: itself, or what it returns when ``factory``; refused when it
    is not an app of ``interface`` (a factory without ``factory``, not callable)."""
    name = repr(spec) if isinstance(spec, str) else shown(spec)
    wanted = "an app factory" if factory else "an ASGI or WSGI app"
    if not callable(found):
        raise AppImportError(f"{name} is {_a(found)}, not {wanted}")
    kind = interface_of(found)
    if not factory:
        if kind == "factory":
            raise AppImportError(
                f"{name} takes no arguments, so it looks like an app factory; add --factory"
            )
        return _served(name, found, interface)
    try:
        signature: inspect.Signature | None = inspect.signature(found)
    except (TypeError, ValueError):  # no signature to read: call it and see
        signature = None
    if signature is not None:
        try:
            signature.bind()
        except TypeError as exc:
            if kind in _APPS:
                raise AppImportError(
                    f"{name} is {_APPS[kind]}, not an app factory; drop --factory"
                ) from None
            raise AppImportError(
                f"app factory {name} cannot be called without arguments ({exc})"
            ) from None
    return _served(f"what the app factory {name} returned", found(), interface)


def _served(subject: str, app: object, interface: str = "auto") -> Any:
    """``app`` if prefork can serve it as ``interface`` asks; ``subject`` names it in the
    refusal."""
    if not callable(app):
        raise AppImportError(f"{subject} is {_a(app)}, not an ASGI or WSGI app")
    kind = interface_of(app)
    if kind == "factory":
        raise AppImportError(f"{subject} takes no arguments: it is not an ASGI or WSGI app")
    if interface == "asgi" and kind == "wsgi":
        raise AppImportError(
            f"{subject} looks like a WSGI app (it takes environ and start_response), not an "
            "ASGI app; drop --interface asgi (or give --interface wsgi)"
        )
    if interface == "wsgi" and _is_async(app):
        raise AppImportError(
            f"{subject} looks like an ASGI app (an async callable), not a WSGI app; drop "
            "--interface wsgi (or give --interface asgi)"
        )
    return app


def _a(value: object) -> str:
    """``value`` named for a message: its type and its start (``a NoneType (None)``)."""
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    return f"{article} {kind} ({shown(value, 40)})"

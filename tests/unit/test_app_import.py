"""Finding the app: every mistake in naming it is one line saying what was looked for; the
user's own exceptions pass through; an app's kind is told by its shape."""

from __future__ import annotations

import functools
import itertools
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefork.http import AppImportError, HTTPConfig
from prefork.http._app import import_app, interface_of, served_interface

_names = itertools.count()

SOURCE = """
async def app(scope, receive, send):
    pass

def wsgi(environ, start_response):
    return []

def create():
    return app

def create_wsgi():
    return wsgi

def create_nothing():
    return None

def create_factory():
    return create

def needs_config(config):
    return app

def boom():
    raise RuntimeError("factory broke")

class Holder:
    async def app(scope, receive, send):
        pass

not_callable = 3
"""


@pytest.fixture
def module(tmp_path: Path) -> Iterator[str]:
    name = f"prefork_app_test_{os.getpid()}_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(SOURCE))
    (tmp_path / f"{name}_dep.py").write_text("import prefork_no_such_dependency\n")
    (tmp_path / f"{name}_raises.py").write_text("raise ValueError('at import')\n")
    sys.path.insert(0, str(tmp_path))
    yield name
    sys.path.remove(str(tmp_path))


def load(app: Any, factory: bool = False, interface: str = "auto") -> Any:
    return import_app(HTTPConfig(app=app, factory=factory, app_dir="", interface=interface))


# --- the kind of an app, by its shape ----------------------------------------------------


async def asgi(scope: Any, receive: Any, send: Any) -> None: ...


def sync3(scope: Any, receive: Any, send: Any) -> Any: ...


def wsgi(environ: Any, start_response: Any) -> Any: ...


def factory() -> Any: ...


def one(scope: Any) -> Any: ...


class Instance:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


class WSGIInstance:
    def __call__(self, environ: Any, start_response: Any) -> Any: ...


class Awaited:  # ASGI 3 as a class: Awaited(scope, receive, send) is awaited
    def __init__(self, scope: Any, receive: Any, send: Any) -> None: ...

    def __await__(self) -> Any: ...


class Made:
    def __init__(self) -> None: ...


@pytest.mark.parametrize(
    ("app", "kind"),
    [
        (asgi, "asgi"),
        (functools.partial(asgi, {}), "asgi"),
        (Instance(), "asgi"),
        (Awaited, "asgi"),
        (sync3, "asgi"),
        (wsgi, "wsgi"),
        (WSGIInstance(), "wsgi"),
        (factory, "factory"),
        (Made, "factory"),
        (one, "unknown"),
        (3, "unknown"),
    ],
)
def test_an_apps_kind_is_told_by_its_shape(app: object, kind: str) -> None:
    assert interface_of(app) == kind


class Unreadable:
    """A callable whose signature cannot be read (as some builtins')."""

    __signature__ = "not a signature"

    def __call__(self, environ: Any, start_response: Any) -> Any: ...


def test_a_callable_without_a_signature_is_unknown_and_a_factory_of_it_is_called() -> None:
    assert interface_of(Unreadable()) == "unknown"
    assert load(Unreadable()) is not None  # served as ASGI: it may be one
    made = Unreadable()
    assert load(type("Maker", (Unreadable,), {"__call__": lambda self: made})(), True) is made


# --- import_app ----------------------------------------------------------------------------


def test_the_app_is_found_by_module_and_dotted_attribute(module: str) -> None:
    assert load(f"{module}:app").__name__ == "app"
    assert load(f"{module}:Holder.app").__qualname__ == "Holder.app"
    assert load(asgi) is asgi
    assert load(f"{module}:create", factory=True).__name__ == "app"


def test_app_dir_is_added_to_the_path_once(module: str, tmp_path: Path) -> None:
    sys.path.remove(str(tmp_path))
    config = HTTPConfig(app=f"{module}:app", app_dir=str(tmp_path))
    assert import_app(config) is import_app(config)
    assert sys.path.count(str(tmp_path)) == 1


@pytest.mark.parametrize(
    ("app", "factory", "message"),
    [
        (
            "{m}_nothere:app",
            False,
            "cannot import app '{m}_nothere:app': no module named '{m}_nothere'; check APP and "
            "--app-dir",
        ),
        (
            "{m}_nothere.sub:app",
            False,
            "cannot import app '{m}_nothere.sub:app': no module named '{m}_nothere'; check APP "
            "and --app-dir",
        ),
        (
            "{m}.sub:app",
            False,
            "cannot import app '{m}.sub:app': no module named '{m}.sub' ('{m}' is not a "
            "package); check APP and --app-dir",
        ),
        ("{m}..x:app", False, "cannot import app '{m}..x:app': '{m}..x' is not a module name"),
        (".{m}:app", False, "cannot import app '.{m}:app': '.{m}' is not a module name"),
        (
            "{m}:nosuch",
            False,
            "cannot import app '{m}:nosuch': attribute 'nosuch' not found in module '{m}'; "
            "check APP and --app-dir",
        ),
        (
            "{m}:Holder.nope",
            False,
            "cannot import app '{m}:Holder.nope': attribute 'Holder.nope' not found in module "
            "'{m}'; check APP and --app-dir",
        ),
        (
            "{m}:not_callable",
            False,
            "'{m}:not_callable' is an int (3), not an ASGI or WSGI app",
        ),
        (
            "{m}:not_callable",
            True,
            "'{m}:not_callable' is an int (3), not an app factory",
        ),
        (
            "{m}:create",
            False,
            "'{m}:create' takes no arguments, so it looks like an app factory; add --factory",
        ),
        ("{m}:app", True, "'{m}:app' is an ASGI app, not an app factory; drop --factory"),
        ("{m}:wsgi", True, "'{m}:wsgi' is a WSGI app, not an app factory; drop --factory"),
        (
            "{m}:needs_config",
            True,
            "app factory '{m}:needs_config' cannot be called without arguments (missing a "
            "required argument: 'config')",
        ),
        (
            "{m}:create_nothing",
            True,
            "what the app factory '{m}:create_nothing' returned is a NoneType (None), not an "
            "ASGI or WSGI app",
        ),
        (
            "{m}:create_factory",
            True,
            "what the app factory '{m}:create_factory' returned takes no arguments: it is not "
            "an ASGI or WSGI app",
        ),
    ],
)
def test_a_mistake_in_naming_the_app_is_one_line(
    module: str, app: str, factory: bool, message: str
) -> None:
    with pytest.raises(AppImportError) as caught:
        load(app.format(m=module), factory)
    assert str(caught.value).startswith(message.format(m=module))
    assert "\n" not in str(caught.value)


def test_an_app_object_is_checked_as_a_named_one() -> None:
    with pytest.raises(AppImportError, match=r"^<function wsgi at .*> looks like a WSGI app"):
        load(wsgi, interface="asgi")


@pytest.mark.parametrize(
    ("app", "factory", "interface", "message"),
    [
        ("{m}:wsgi", False, "asgi", "'{m}:wsgi' looks like a WSGI app (it takes environ and "
         "start_response), not an ASGI app; drop --interface asgi (or give --interface wsgi)"),
        ("{m}:create_wsgi", True, "asgi", "what the app factory '{m}:create_wsgi' returned "
         "looks like a WSGI app"),
        ("{m}:app", False, "wsgi", "'{m}:app' looks like an ASGI app (an async callable), not "
         "a WSGI app; drop --interface wsgi (or give --interface asgi)"),
    ],
)  # fmt: skip
def test_an_app_of_the_other_interface_is_one_line(
    module: str, app: str, factory: bool, interface: str, message: str
) -> None:
    with pytest.raises(AppImportError) as caught:
        load(app.format(m=module), factory, interface)
    assert str(caught.value) == message.format(m=module) or str(caught.value).startswith(
        message.format(m=module)
    )


@pytest.mark.parametrize(
    ("app", "factory", "interface", "served"),
    [
        ("{m}:wsgi", False, "auto", "wsgi"),
        ("{m}:wsgi", False, "wsgi", "wsgi"),
        ("{m}:create_wsgi", True, "auto", "wsgi"),
        ("{m}:app", False, "auto", "asgi"),
        ("{m}:app", False, "asgi", "asgi"),
    ],
)
def test_auto_tells_a_wsgi_app_by_its_shape(
    module: str, app: str, factory: bool, interface: str, served: str
) -> None:
    found = load(app.format(m=module), factory, interface)
    assert served_interface(found, interface) == served


@pytest.mark.parametrize(
    ("app", "factory", "error", "words"),
    [
        ("{m}_dep:app", False, ModuleNotFoundError, "prefork_no_such_dependency"),
        ("{m}_raises:app", False, ValueError, "at import"),
        ("{m}:boom", True, RuntimeError, "factory broke"),
    ],
)
def test_the_users_own_errors_pass_through(
    module: str, app: str, factory: bool, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        load(app.format(m=module), factory)

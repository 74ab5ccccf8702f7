"""The app imported once before the master starts, in a child: what it answers, and what
happens when it hangs, dies, or the command line is interrupted."""

from __future__ import annotations

import functools
import io
import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefork.core._options import ConfigError
from prefork.http import HTTPConfig
from prefork.http._app import import_app, import_module
from prefork.master import _app_check, _process
from prefork.master._app_check import MAX_ANSWER, check_app
from prefork.master._process import Identity

_names = itertools.count()


@pytest.fixture
def app_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("prefork_check_")]:
        del sys.modules[name]


def module(app_dir: Path, source: str) -> str:
    """A module of ``source`` in ``app_dir``; its name."""
    name = f"prefork_check_{os.getpid()}_{next(_names)}"
    (app_dir / f"{name}.py").write_text(source)
    return name


def check(app_dir: Path, app: str, *, preload: bool = False, **options: Any) -> None:
    """``check_app`` with the HTTP worker's importer, as ``prefork serve`` calls it."""
    options.setdefault("identity", Identity())
    options.setdefault("timeout", 10.0)
    config = HTTPConfig(app=app, app_dir=str(app_dir))
    load_module = functools.partial(import_module, config) if preload else None
    check_app(app, functools.partial(import_app, config), preload=load_module, **options)


APP = "async def app(scope, receive, send):\n    pass\n"


def test_an_app_that_imports_passes_and_stays_out_of_this_process(app_dir: Path) -> None:
    name = module(app_dir, APP)
    check(app_dir, f"{name}:app")
    assert name not in sys.modules


def test_preload_imports_the_module_here_too(app_dir: Path) -> None:
    name = module(app_dir, APP)
    check(app_dir, f"{name}:app", preload=True)
    assert name in sys.modules


def test_a_missing_attribute_is_its_line_and_nothing_else(app_dir: Path) -> None:
    name = module(app_dir, APP)
    out = io.StringIO()
    with pytest.raises(ConfigError) as caught:
        check(app_dir, f"{name}:nosuch", traceback_to=out)
    assert str(caught.value) == (
        f"cannot import app '{name}:nosuch': attribute 'nosuch' not found in module {name!r}; "
        "check APP and --app-dir"
    )
    assert out.getvalue() == ""


def test_an_exception_of_the_users_is_a_line_and_their_frames(app_dir: Path) -> None:
    name = module(app_dir, "import json\njson.loads('{')\n")
    path = app_dir / f"{name}.py"
    out = io.StringIO()
    with pytest.raises(ConfigError) as caught:
        check(app_dir, f"{name}:app", traceback_to=out)
    assert str(caught.value) == (
        f"cannot import app '{name}:app': json.decoder.JSONDecodeError: Expecting property "
        f"name enclosed in double quotes: line 1 column 2 (char 1) ({path}, line 2)"
    )
    trace = out.getvalue()
    assert trace.startswith(f'Traceback (most recent call last):\n  File "{path}", line 2')
    assert "json/decoder.py" in trace  # the user's libraries are theirs too
    assert "prefork/" not in trace and "importlib" not in trace
    with pytest.raises(ConfigError):
        check(app_dir, f"{name}:app")  # --check-config: the line alone


def test_a_huge_traceback_is_cut_at_its_front(app_dir: Path) -> None:
    name = module(app_dir, "raise ValueError('x' * 100_000 + 'END')\n")
    out = io.StringIO()
    with pytest.raises(ConfigError, match=r"ValueError: x+\.\.\.$"):
        check(app_dir, f"{name}:app", traceback_to=out)
    assert len(out.getvalue()) < MAX_ANSWER and out.getvalue().endswith("xEND\n")


def test_a_module_that_imports_in_the_child_but_not_here(app_dir: Path) -> None:
    source = f"import os\nif os.getpid() == {os.getpid()}:\n    raise OSError('only here')\n"
    name = module(app_dir, source + APP)
    with pytest.raises(ConfigError) as caught:
        check(app_dir, f"{name}:app", preload=True)
    assert str(caught.value) == (
        f"cannot import app '{name}:app': OSError: only here ({app_dir / name}.py, line 3)"
    )


@pytest.mark.parametrize(
    ("source", "ended"),
    [
        ("import os\nos._exit(3)\n", "exited with code 3"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "was killed by signal 9"),
    ],
)
def test_a_child_that_dies_before_it_answers(app_dir: Path, source: str, ended: str) -> None:
    name = module(app_dir, source)
    with pytest.raises(ConfigError) as caught:
        check(app_dir, f"{name}:app")
    assert str(caught.value) == (
        f"cannot import app '{name}:app': the process importing it {ended} before it answered"
    )


def test_an_import_that_hangs_ends_at_the_boot_timeout(app_dir: Path) -> None:
    name = module(app_dir, "import time\ntime.sleep(60)\n")
    with pytest.raises(ConfigError) as caught:
        check(app_dir, f"{name}:app", timeout=0.3)
    assert str(caught.value) == (
        f"cannot import app '{name}:app': importing it took longer than --boot-timeout (0.3 s)"
    )


def test_an_interrupted_check_leaves_no_child(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = module(app_dir, "import time\ntime.sleep(60)\n")
    forked: list[int] = []
    fork = _process.fork_worker

    def recorded(*args: Any, **kwargs: Any) -> int:
        forked.append(fork(*args, **kwargs))
        return forked[-1]

    def interrupted(fd: int, deadline: float) -> bytes:
        raise KeyboardInterrupt

    monkeypatch.setattr(_process, "fork_worker", recorded)
    monkeypatch.setattr(_app_check, "_read", interrupted)
    with pytest.raises(KeyboardInterrupt):
        check(app_dir, f"{name}:app")
    with pytest.raises(ProcessLookupError):
        os.kill(forked[0], 0)  # killed and reaped


class Refused(Identity):
    def assume(self) -> None:
        raise PermissionError(1, "Operation not permitted")


def test_workers_that_could_not_become_their_user(app_dir: Path) -> None:
    name = module(app_dir, APP)
    with pytest.raises(ConfigError) as caught:
        check(app_dir, f"{name}:app", identity=Refused())
    assert str(caught.value) == "cannot run the workers as --user/--group: Operation not permitted"

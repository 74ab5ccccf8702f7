"""What a user is shown of an exception: their frames, never prefork's or importlib's; one of
prefork's own is its message; a bug of prefork's is printed whole."""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefork.config import octal
from prefork.http import AppImportError, HTTPConfig
from prefork.http._app import import_app
from prefork.master import _tracebacks as tb

PREFORK = str(Path(tb.__file__).parents[1])  # the package (the module is in prefork/master/)


def caught(call: object, *args: object, strip: int = 0) -> BaseException:
    """What ``call(*args)`` raises, its first ``strip`` frames (this file's) cut off."""
    try:
        call(*args)  # type: ignore[operator]
    except BaseException as exc:
        trace = exc.__traceback__
        for _ in range(strip):
            assert trace is not None
            trace = trace.tb_next
        return exc.with_traceback(trace)
    raise AssertionError("nothing raised")


def without_carets(text: str) -> str:
    """``text`` without the lines of ``~`` and ``^`` that Python 3.13 adds under a call."""
    return "\n".join(line for line in text.split("\n") if line.strip(" ~^"))


@pytest.fixture
def raising_module(tmp_path: Path) -> Iterator[str]:
    name = f"prefork_tb_test_{id(tmp_path)}"
    source = "def helper():\n    raise ValueError('in helper')\n\n\nhelper()\n"
    (tmp_path / f"{name}.py").write_text(source)
    sys.path.insert(0, str(tmp_path))
    yield str(tmp_path / f"{name}.py")
    sys.path.remove(str(tmp_path))


def test_the_users_frames_are_kept_importlibs_and_preforks_left_out(raising_module: str) -> None:
    name = Path(raising_module).stem
    exc = caught(import_app, HTTPConfig(app=f"{name}:app", app_dir=""), strip=1)
    assert without_carets(tb.user_traceback(exc)) == (
        "Traceback (most recent call last):\n"
        f'  File "{raising_module}", line 5, in <module>\n'
        "    helper()\n"
        f'  File "{raising_module}", line 2, in helper\n'
        "    raise ValueError('in helper')\n"
        "ValueError: in helper"
    )
    assert tb.one_line(exc) == f"ValueError: in helper ({raising_module}, line 2)"
    frames = [f.filename for f in tb.users_frames(exc)]
    assert frames == [raising_module, raising_module]
    whole = "".join(traceback.format_exception(exc))
    assert PREFORK in whole and "importlib" in whole  # what was left out


def test_preforks_own_exception_is_its_message() -> None:
    exc = caught(import_app, HTTPConfig(app="prefork_tb_nowhere:app", app_dir=""), strip=1)
    assert isinstance(exc, AppImportError) and tb.prefork_raised(exc)
    message = "cannot import app 'prefork_tb_nowhere:app': no module named 'prefork_tb_nowhere'"
    assert tb.user_traceback(exc).startswith(message)
    assert tb.one_line(exc).startswith(message)


def test_a_bug_of_preforks_is_printed_whole() -> None:
    exc = caught(octal, "9", strip=1)  # a ValueError raised in prefork's own frame
    assert not tb.prefork_raised(exc) and tb.users_frames(exc) == []
    text = tb.user_traceback(exc)
    assert text.startswith("Traceback (most recent call last):\n")
    error = "ValueError: invalid literal for int() with base 8: '9'"
    assert f"{PREFORK}/config.py" in text and text.endswith(error)
    assert tb.one_line(exc) == error


def test_a_chain_keeps_its_links() -> None:
    def fail() -> None:
        try:
            raise KeyError("first")
        except KeyError as first:
            try:
                raise OSError("second")
            except OSError:
                raise RuntimeError("third") from first

    text = tb.user_traceback(caught(fail))
    assert text.count("Traceback (most recent call last):") == 2
    assert "KeyError: 'first'\n\nThe above exception was the direct cause" in text
    assert "OSError" not in text  # the cause replaces the context, as Python prints it
    assert text.endswith("RuntimeError: third")

    def during() -> None:
        try:
            raise KeyError("first")
        except KeyError:
            raise RuntimeError("second")  # noqa: B904 - the context is the point

    text = tb.user_traceback(caught(during))
    assert "During handling of the above exception, another exception occurred" in text


def test_a_chain_that_loops_ends() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert tb.user_traceback(a) == (
        "ValueError: b\n\nDuring handling of the above exception, another exception occurred:"
        "\n\nValueError: a"
    )


def test_a_preforks_exception_with_the_users_frames_keeps_them() -> None:
    exc = caught(_raise_ours)
    assert "Traceback" in tb.user_traceback(exc)
    assert tb.one_line(exc).startswith("prefork.http._app.AppImportError: ours (")


def _raise_ours() -> None:
    raise AppImportError("ours")


def test_a_syntax_error_in_the_users_file_is_shown_where_it_is(tmp_path: Path) -> None:
    exc = caught(compile, "def app(:\n", str(tmp_path / "broken.py"), "exec", strip=1)
    text = tb.user_traceback(exc)
    assert text.startswith(f'  File "{tmp_path / "broken.py"}", line 1\n    def app(:\n')
    assert text.endswith("SyntaxError: invalid syntax")
    line = f"SyntaxError: invalid syntax ({tmp_path / 'broken.py'}, line 1)"
    assert tb.one_line(exc) == line
    ours = caught(compile, "def app(:\n", f"{PREFORK}/x.py", "exec", strip=1)
    assert tb.user_traceback(ours) == "".join(traceback.format_exception(ours)).rstrip()
    nameless = SyntaxError("bad")
    assert tb.user_traceback(nameless) == "SyntaxError: bad"


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (RuntimeError(), "RuntimeError"),
        (
            json.JSONDecodeError("bad", "x", 0),
            "json.decoder.JSONDecodeError: bad: line 1 column 1 (char 0)",
        ),
        (ValueError("a\n  b"), "ValueError: a b"),
        (ValueError("x" * 400), "ValueError: " + "x" * (tb.MAX_LINE - 15) + "..."),
    ],
)
def test_one_line(exc: BaseException, line: str) -> None:
    assert tb.one_line(exc) == line


def test_importlib_is_where_it_is() -> None:
    assert tb._NOT_THE_USERS[1].startswith(str(Path(importlib.__file__).parent))

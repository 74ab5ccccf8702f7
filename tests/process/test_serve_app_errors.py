"""`prefork serve` with an app that cannot start, as a user meets it: refused before the master
starts, in one line naming what was looked for (with the user's own frames first when their
code raised); the same errors in the log of a reload, without a frame of prefork's;
``--check-config`` imports the app too."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ROOT, MasterProcess, wait_until

pytestmark = pytest.mark.timeout(30)

Start = Callable[..., MasterProcess]
PLAIN = """\
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served"})

not_callable = 3

def create():
    return app

def wsgi(environ, start_response):
    return []
"""
RAISING = """\
def helper():
    raise RuntimeError('boom at import')

helper()
"""


def serve(start: Start, sock: socket.socket, app_dir: Path, *argv: str) -> MasterProcess:
    command = [sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
    return start([*command, "--app-dir", str(app_dir), "--workers", "1", *argv], pass_fds=[sock])


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "plain.py").write_text(PLAIN)
    (tmp_path / "raising.py").write_text(RAISING)
    (tmp_path / "needs_dep.py").write_text("import no_such_dependency_for_prefork_tests\n")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["plain:nosuch"],
            "cannot import app 'plain:nosuch': attribute 'nosuch' not found in module 'plain'; "
            "check APP and --app-dir",
        ),
        (
            ["no_such_module_q:app"],
            "cannot import app 'no_such_module_q:app': no module named 'no_such_module_q'; "
            "check APP and --app-dir",
        ),
        (["plain:not_callable"], "'plain:not_callable' is an int (3), not an ASGI or WSGI app"),
        (
            ["plain:wsgi", "--interface", "asgi"],
            "'plain:wsgi' looks like a WSGI app (it takes "
            "environ and start_response), not an ASGI app; drop --interface asgi",
        ),
        (
            ["plain:app", "--interface", "wsgi"],
            "'plain:app' looks like an ASGI app (an async "
            "callable), not a WSGI app; drop --interface wsgi",
        ),
        (["plain:create"], "'plain:create' takes no arguments, so it looks like an app factory"),
        (["--factory", "plain:app"], "'plain:app' is an ASGI app, not an app factory; drop"),
    ],
)
def test_an_app_that_cannot_be_found_is_one_line_before_the_master_starts(
    start: Start, sock: socket.socket, app_dir: Path, argv: list[str], line: str
) -> None:
    master = serve(start, sock, app_dir, *argv)
    assert master.wait_exit() == 2
    (printed,) = master.stderr().splitlines()
    assert printed.startswith(f"prefork: error: {line}")
    assert master.stdout() == ""


@pytest.mark.parametrize(
    ("app", "frames", "error"),
    [
        (
            "raising:app",
            [("raising.py", 4, "<module>", "helper()"),
             ("raising.py", 2, "helper", "raise RuntimeError('boom at import')")],
            ("RuntimeError: boom at import", "raising.py", 2),
        ),
        (
            "needs_dep:app",
            [("needs_dep.py", 1, "<module>", "import no_such_dependency_for_prefork_tests")],
            (
                "ModuleNotFoundError: No module named 'no_such_dependency_for_prefork_tests'",
                "needs_dep.py",
                1,
            ),
        ),
    ],
)  # fmt: skip
def test_an_exception_in_the_users_code_shows_the_users_frames_only(
    start: Start,
    sock: socket.socket,
    app_dir: Path,
    app: str,
    frames: list[tuple[str, int, str, str]],
    error: tuple[str, str, int],
) -> None:
    master = serve(start, sock, app_dir, app)
    assert master.wait_exit() == 2
    expected = ["Traceback (most recent call last):"]
    for name, number, function, source in frames:
        expected += [f'  File "{app_dir / name}", line {number}, in {function}', f"    {source}"]
    message, name, number = error
    expected += [
        message,
        f"prefork: error: cannot import app {app!r}: {message} ({app_dir / name}, line {number})",
    ]
    printed = master.stderr().splitlines()
    assert [line for line in printed if line.strip(" ~^")] == expected  # 3.13's carets aside


def test_check_config_imports_the_app(start: Start, app_dir: Path) -> None:
    command = [sys.executable, "-m", "prefork", "serve", "--app-dir", str(app_dir)]
    for app, line in (
        ("plain:app", "prefork: the options and the app are fine"),
        ("plain:nosuch", "prefork: error: cannot import app 'plain:nosuch': attribute 'nosuch'"),
        ("raising:app", "prefork: error: cannot import app 'raising:app': RuntimeError: boom"),
    ):
        checked = start([*command, "--check-config", app])
        assert checked.wait_exit() == (0 if app == "plain:app" else 2)
        printed = checked.stderr().splitlines()[-1]  # (after the template choice, if fine)
        assert printed.startswith(line)


def test_a_reload_onto_an_app_that_cannot_start_logs_what_the_user_needs(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    """After the first start, the worker finds the app: its errors reach the master's log, a
    missing attribute as one line, an exception with the user's frames only."""
    module = tmp_path / "deployed.py"
    module.write_text(PLAIN)
    master = serve(start, sock, tmp_path, "deployed:app")
    wait_until(lambda: "is ready" in master.stderr(), 10, "a ready worker")
    module.write_text("other = 1\n")
    master.signal(signal.SIGHUP)
    wait_until(lambda: master.stderr().count("reload rolled back") == 1, 10, "a rollback")
    assert (
        "could not start:\ncannot import app 'deployed:app': attribute 'app' not found in "
        "module 'deployed'; check APP and --app-dir\n"
    ) in master.stderr()
    module.write_text(RAISING)
    master.signal(signal.SIGHUP)
    wait_until(lambda: master.stderr().count("reload rolled back") == 2, 10, "a second rollback")
    log = "".join(line for line in master.stderr().splitlines(True) if line.strip(" ~^\n"))
    assert (
        "could not start:\nTraceback (most recent call last):\n"
        f'  File "{module}", line 4, in <module>\n    helper()\n'
        f'  File "{module}", line 2, in helper\n'
        "    raise RuntimeError('boom at import')\nRuntimeError: boom at import\n"
    ) in log
    assert "Traceback" not in log.partition("reload rolled back")[0]  # the missing attribute
    assert str(ROOT / "prefork") not in log and "importlib" not in log

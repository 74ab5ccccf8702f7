"""A gunicorn ``gunicorn.conf.py`` given to ``-c``: its literal settings are read under
gunicorn's names without running a line of it; anything else is one line naming the line and
what to write instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefork import _serve_command, cli
from prefork.core._options import ConfigError
from prefork.master import _setup as setup
from prefork.master._pyconfig import RENAMED, prefork_key

CONFIGS = (*_serve_command.SERVE_CONFIGS, _serve_command.ServeOptions)
GUNICORN_CONF = """\
\"\"\"A gunicorn config, as gunicorn's docs write them.\"\"\"
import os
from pathlib import Path

bind = ["127.0.0.1:8001", "unix:/tmp/g.sock"]
workers = 3
timeout = 120
graceful_timeout = 20.5
keepalive = 4
max_requests = 1000
max_requests_jitter = 50
backlog = (64)
accesslog = "-"
errorlog = None
loglevel = "debug"
preload_app = False
daemon = False
raw_env = None
proc_name = "shop"
forwarded_allow_ips = ("10.0.0.0/8", "unix")
umask = 0o022
limit_request_line: int = 4094
wsgi_app = "main:app"
'Another bare string'
"""


def read(tmp_path: Path, source: str, name: str = "gunicorn.conf.py") -> dict[str, object]:
    path = tmp_path / name
    path.write_text(source)
    return setup.read_config_file(str(path), CONFIGS)


def refusal(tmp_path: Path, source: str) -> str:
    with pytest.raises(ConfigError) as caught:
        read(tmp_path, source)
    message = str(caught.value)
    assert "\n" not in message
    prefix = f"config file {str(tmp_path / 'gunicorn.conf.py')!r}"
    assert message.startswith(prefix)
    return message[len(prefix) :]


def test_the_literal_settings_are_read_under_gunicorns_names(tmp_path: Path) -> None:
    assert read(tmp_path, GUNICORN_CONF) == {
        "listen": ["127.0.0.1:8001", "unix:/tmp/g.sock"],
        "workers": 3,
        "timeout": 120,
        "graceful_timeout": 20.5,
        "keep_alive": 4,
        "max_requests": 1000,
        "max_requests_jitter": 50,
        "backlog": 64,
        "access_logfile": "-",
        "log_level": "debug",
        "preload": False,
        "name": "shop",
        "forwarded_allow_ips": ["10.0.0.0/8", "unix"],
        "umask": 0o022,
        "limit_request_line": 4094,
        "app": "main:app",
    }


def test_every_renamed_setting_is_one_of_preforks_keys() -> None:
    keys = setup._keys(CONFIGS)
    assert {prefork_key(name) for name in RENAMED} <= keys.keys()
    assert prefork_key("graceful_timeout") == "graceful-timeout"


def test_a_gunicorn_config_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "main.py").write_text("async def app(scope, receive, send):\n    pass\n")
    Path("gunicorn.conf.py").write_text("wsgi_app = 'main:app'\nworkers = 2\nkeepalive = 3\n")
    code = cli.main(["serve", "-c", "gunicorn.conf.py", "--check-config"])
    err = capsys.readouterr().err
    assert code == 0 and err.endswith("\nprefork: the options and the app are fine\n")
    assert cli.main(["serve", "-c", "gunicorn.conf.py", "--print-config"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert {"workers = 2", "keep-alive = 3", 'app = "main:app"'} <= set(printed)


def test_the_config_of_the_first_hour_is_refused_at_its_computed_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("gunicorn.conf.py").write_text(
        "import multiprocessing\nworkers = multiprocessing.cpu_count() * 2 + 1\n"
        "bind = '127.0.0.1:8000'\nworker_class = 'uvicorn.workers.UvicornWorker'\n"
    )
    code = cli.main(["serve", "json:app", "--check-config", "-c", "gunicorn.conf.py"])
    assert (code, capsys.readouterr().err) == (
        2,
        "prefork: error: config file 'gunicorn.conf.py' line 2: workers = "
        "multiprocessing.cpu_count() * 2 + 1 is computed, and prefork reads a gunicorn config "
        "file (.py) without running it; write a whole number (workers = 4), or remove the "
        "line for prefork's default\n",
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "timeout = 60 * 2\n",
            " line 1: timeout = 60 * 2 is computed, and prefork reads a gunicorn config file "
            "(.py) without running it; write a number (timeout = 30), or remove",
        ),
        ("preload_app = not True\n", " line 1: preload_app = not True is computed, and prefork "),
        ("bind = f'0.0.0.0:{8000}'\n", " line 1: bind = f'0.0.0.0:{8000}' is computed"),
        ("name = '-' * 100\n", " line 1: name = '-' * 100 is computed, "),
        (
            "# gunicorn\nworkers = " + "1 + " * 30 + "1\n",
            " line 2: workers = 1 + 1 + 1 + 1 + 1 + 1",
        ),
        (
            "# gunicorn\nworker_class = 'sync'\n",
            " line 2: prefork has no setting 'worker_class'; prefork picks the worker from the "
            "app (an ASGI app runs on its HTTP worker); no worker class is needed",
        ),
        (
            "reload_extra_files = ['a.txt']\n",
            " line 1: prefork has no setting 'reload_extra_files'; --reload watches directories",
        ),
        ("pythonpath = 'src'\n", " line 1: prefork has no setting 'pythonpath'; name the "),
        ("statsd_host = 'x'\n", " line 1: prefork has no setting 'statsd_host'; remove the line"),
        (
            "def post_fork(server, worker):\n    pass\n",
            " line 1: def post_fork(...): prefork runs no gunicorn server hooks; remove it",
        ),
        (
            "import os\nif os.environ.get('DEBUG'):\n    loglevel = 'debug'\n",
            " line 2: \"if os.environ.get('DEBUG'):\" cannot be read: prefork reads a gunicorn "
            "config file (.py) without running it, so only NAME = value lines and imports can "
            "be in it; write the values themselves, or the settings in TOML",
        ),
        ("workers += 1\n", " line 1: 'workers += 1' cannot be read"),
        ("workers = threads = 2\n", " line 1: 'workers = threads = 2' cannot be read"),
        ("workers, timeout = 2, 3\n", " line 1: 'workers, timeout = 2, 3' cannot be read"),
        ("workers: int\n", " line 1: 'workers: int' cannot be read"),
        ("print('hi')\n", " line 1: \"print('hi')\" cannot be read"),
        ("workers = 'four'\n", ": workers (line 1) = 'four' is not valid"),
        ("# gunicorn\nworkers = 5000\n", ": workers (line 2) must be at most 1024, got 5000"),
        ("bind = 8000\n", ": bind (line 1) must be a string or a list of them, not an integer"),
        ("workers = (\n", " is not valid Python: '(' was never closed (line 1)"),
        ("x = 1" + "+1" * 100_000 + "\n", " cannot be read as Python: "),
    ],
)
def test_what_cannot_be_read_is_one_line_naming_the_line(
    tmp_path: Path, source: str, message: str
) -> None:
    assert refusal(tmp_path, source).startswith(message)


def test_a_toml_file_is_still_toml(tmp_path: Path) -> None:
    assert read(tmp_path, "workers = 2\n", "prefork.toml") == {"workers": 2}
    with pytest.raises(ConfigError, match="unknown key 'keepalive'; did you mean 'keep-alive'"):
        read(tmp_path, "keepalive = 2\n", "prefork.toml")

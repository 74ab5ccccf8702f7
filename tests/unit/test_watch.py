"""``prefork serve --reload``: its options and refusals (one line, exit 2), what it watches,
the master's side of a change, and the watcher worker run in this process on real files."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
import watchfiles

from prefork import cli
from prefork.core._options import ConfigError
from prefork.core._payloads import WorkerInfo
from prefork.master import _watch
from prefork.master._loop import Master
from prefork.master._watch import ReloadConfig, Watch, Watcher

APP_DIR = str(Path(__file__).resolve().parents[2] / "examples")


def serve(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["serve", "--app-dir", APP_DIR, *argv, "hello:app"])
    out, err = capsys.readouterr()
    return code, out, err.strip()


# --- the command line ------------------------------------------------------------------


def test_reload_serves_one_worker_unless_told(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "6")  # production's setting: not for --reload
    code, out, _ = serve(capsys, "--reload", "--reload-dir", str(tmp_path), "--print-config")
    lines = out.splitlines()
    assert code == 0 and "workers = 1" in lines and "reload = true" in lines
    assert f'reload-dir = ["{tmp_path}"]' in lines and "reload-delay = 0.25" in lines
    code, out, _ = serve(capsys, "--reload", "-w", "3", "--print-config")
    assert code == 0 and "workers = 3" in out.splitlines()  # uvicorn ignores it; we keep it
    code, out, _ = serve(capsys, "--print-config")
    assert "workers = 6" in out.splitlines() and "reload = false" in out.splitlines()


def test_the_reload_options_come_from_a_config_file_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    conf = tmp_path / "prefork.toml"
    conf.write_text(f'reload = true\nreload-dir = "{tmp_path}"\nreload-include = ["*.html"]\n')
    code, out, _ = serve(capsys, "-c", str(conf), "--print-config")
    lines = out.splitlines()
    assert code == 0 and "reload = true" in lines and 'reload-include = ["*.html"]' in lines


def test_a_gunicorn_config_files_reload_is_ours(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("reload = True\nworkers = 2\nwsgi_app = 'hello:app'\n")
    code = cli.main(["serve", "--app-dir", APP_DIR, "-c", str(conf), "--print-config"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and "reload = true" in lines and "workers = 2" in lines


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--reload-dir", "src"], "--reload-dir needs --reload; add --reload or drop --reload-dir"),
        (["--reload-delay", "1"], "--reload-delay needs --reload; add --reload or drop"),
        (["--reload", "--reload-delay", "-1"], "reload_delay must be a number of seconds >= 0"),
        (["--reload", "--reload-dir", "/no/such/dir"], "--reload-dir '/no/such/dir' is not a "),
        (
            ["--reload", "--preload"],
            "--reload cannot load new code with --preload (the app is imported once, in the "
            "master); drop one of them",
        ),
    ],
)
def test_refusals_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = serve(capsys, *argv)
    assert code == 2 and err.startswith(f"prefork: error: {message}") and "\n" not in err


def test_reload_without_watchfiles_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # import watchfiles raises
    code, _, err = serve(capsys, "--reload", "--check-config")
    assert (code, err) == (
        2,
        "prefork: error: --reload needs watchfiles: pip install 'prefork[reload]'",
    )


def test_the_first_log_line_says_reload_is_on(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran: list[Master] = []
    monkeypatch.setattr(Master, "run", lambda self: ran.append(self) or 0)
    code, _, err = serve(capsys, "--reload", "--reload-dir", str(tmp_path), "--bind", "unix:x")
    assert code == 0
    first = err.splitlines()[0]
    assert first.endswith(
        f"[WARNING] prefork.master: --reload: watching {os.path.realpath(tmp_path)} for *.py; "
        "a development server, not for production"
    )
    assert set(ran[0].status()) == {"http", "reload"}  # the watcher is a broker of its own
    argv = ["--reload", "--reload-dir", str(tmp_path), "--bind", "unix:x", "--log-level", "error"]
    code, _, err = serve(capsys, *argv)
    assert code == 0 and "[ERROR] prefork.master: --reload: watching" in err.splitlines()[0]
    code, _, err = serve(capsys, "--reload", "--reload-dir", str(tmp_path), "--check-config")
    assert code == 0 and "--reload:" not in err  # said only when it serves


# --- what it watches -------------------------------------------------------------------


def test_it_watches_the_working_directory_and_the_app_dir_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "src")
    monkeypatch.chdir(tmp_path / "src")
    threads = threading.active_count()
    watch = _watch.plan(ReloadConfig(reload=True), str(tmp_path / "elsewhere"))
    assert threading.active_count() == threads  # importing watchfiles starts no thread
    assert watch.dirs == (str(tmp_path / "src"), str(tmp_path / "elsewhere"))
    assert watch.delay == 0.25 and watch.filter.includes == ("*.py",)
    # Inside another, or the same through a link: watched once.
    config = ReloadConfig(
        reload=True, reload_dir=(str(tmp_path), str(tmp_path / "link"), "."), reload_delay=1
    )
    watch = _watch.plan(config, ".")
    assert watch.dirs == (str(tmp_path),) and watch.filter.roots == watch.dirs
    assert watch.delay == 1


class Target:
    """A broker as the master's side of a change sees it."""

    type = "http"

    def __init__(self) -> None:
        self.reloads = 0

    def reload(self) -> None:
        self.reloads += 1


INFO = WorkerInfo(3, 103, "reload", 1)


def test_a_change_reported_reloads_the_target_and_says_what_changed(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    target = Target()
    with caplog.at_level(logging.INFO, "prefork.master"):
        _watch.changed(target, {"changed": [f"{tmp_path}/a.py", "/b.py"], "count": 4}, INFO)  # type: ignore[arg-type]
        _watch.changed(target, {"changed": [f"{tmp_path}/a.py"], "count": 1}, INFO)  # type: ignore[arg-type]
        _watch.changed(target, {"changed": "a.py"}, INFO)  # type: ignore[arg-type]
    assert target.reloads == 2
    assert [r.getMessage() for r in caplog.records] == [
        "[reload] a.py, /b.py and 2 more changed: reloading http",
        "[reload] a.py changed: reloading http",
        "[reload] ignored a message from worker 3: {'changed': 'a.py'}",
    ]


class Watchers:
    """The watcher's broker, as its worker_ready callback sees it."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.scaled: list[int] = []

    def scale(self, n: int) -> None:
        self.scaled.append(n)


def test_a_watcher_more_goes_again() -> None:
    for workers, scaled in ((1, []), (2, [1])):
        broker = Watchers(workers)
        _watch.one_watcher(broker, INFO)  # type: ignore[arg-type]
        assert broker.scaled == scaled


def test_the_watcher_takes_only_a_watch() -> None:
    with pytest.raises(ConfigError, match="a Watcher needs watch=Watch"):
        Watcher.check_options({"watch": "."})
    with pytest.raises(ConfigError, match="a Watcher needs watch=Watch"):
        Master().broker("reload", Watcher)


# --- the watcher, in this process ------------------------------------------------------


class Channel:
    def __init__(self) -> None:
        self.frames: list[tuple[str, Any]] = []

    def send_frame(self, kind: str, body: Any = None) -> None:
        self.frames.append((kind, body))

    def messages(self) -> list[Any]:
        return [body for kind, body in self.frames if kind == "msg"]


def watcher(channel: Channel, directory: Path, delay: float = 0.05) -> Watcher:
    config = ReloadConfig(reload=True, reload_dir=(str(directory),), reload_delay=delay)
    watch = _watch.plan(config, str(directory))
    w = Watcher(
        type="reload", id=3, generation=1, sockets=[], options={"watch": watch}, channel=channel
    )
    w._exit = asyncio.get_running_loop().create_future()
    return w


async def until(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "not in time"
        await asyncio.sleep(0.01)


def test_a_save_once_ready_is_one_message_naming_what_counts(tmp_path: Path) -> None:
    channel = Channel()
    real = os.path.realpath(tmp_path)

    async def main() -> None:
        w = watcher(channel, tmp_path)
        await w.init()  # ready from here: the watches are set up
        (tmp_path / "app.py").write_text("x = 1\n")
        (tmp_path / "app.py").write_text("x = 2\n")
        (tmp_path / "notes.txt").write_text("not code\n")
        await until(channel.messages)
        await asyncio.sleep(0.2)  # nothing more comes of that save
        assert channel.messages() == [{"changed": [f"{real}/app.py"], "count": 1}]
        for name in "abcde":
            (tmp_path / f"{name}.py").write_text("")
        await until(lambda: len(channel.messages()) == 2)
        names = [f"{real}/{n}.py" for n in "abc"]
        assert channel.messages()[1] == {"changed": names, "count": 5}  # three named at most
        await w.prepare_for_shutdown()
        assert w._exit is not None and w._exit.result() == 0 and w._task.done()

    uvloop.run(main())


def test_a_save_while_the_watcher_starts_is_not_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP workers may import the code before the watcher watches: what is saved from
    the watcher's start until its watches are set up is found by a walk and reloads."""
    channel = Channel()
    real = os.path.realpath(tmp_path)
    (tmp_path / "old.py").write_text("")
    os.utime(tmp_path / "old.py", (1_000_000, 1_000_000))  # saved long before: not a change
    (tmp_path / ".git").mkdir()
    (tmp_path / "pkg").mkdir()
    watch_from = watchfiles.awatch

    def saved_meanwhile(*dirs: str, **options: Any) -> Any:
        (tmp_path / "pkg" / "app.py").write_text("x = 2\n")  # before the watches are set up
        (tmp_path / ".git" / "hook.py").write_text("")  # in a pruned directory
        (tmp_path / "notes.txt").write_text("")  # does not count
        return watch_from(*dirs, **options)

    monkeypatch.setattr(watchfiles, "awatch", saved_meanwhile)

    async def main() -> None:
        w = watcher(channel, tmp_path)
        await w.init()
        await until(channel.messages)
        assert channel.messages() == [{"changed": [f"{real}/pkg/app.py"], "count": 1}]
        await w.prepare_for_shutdown()

    uvloop.run(main())


def test_the_walk_skips_a_file_gone_before_it_is_looked_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gone.py").write_text("")
    (tmp_path / "here.py").write_text("")
    watch = _watch.plan(ReloadConfig(reload=True, reload_dir=(str(tmp_path),)), str(tmp_path))
    stat = os.stat

    def vanishing(path: str) -> os.stat_result:
        if path.endswith("gone.py"):
            raise FileNotFoundError(path)
        return stat(path)

    monkeypatch.setattr(_watch.os, "stat", vanishing)
    found = list(_watch.saved_since(watch, 0.0))
    assert found == [f"{os.path.realpath(tmp_path)}/here.py"]


def test_a_watcher_that_cannot_watch_fails_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_watches(*dirs: str, **options: Any) -> AsyncIterator[set[tuple[Any, str]]]:
        raise OSError(28, "OS file watch limit reached")  # as watchfiles says it
        yield set()

    monkeypatch.setattr(watchfiles, "awatch", no_watches)

    async def main() -> None:
        w = watcher(Channel(), tmp_path)
        with pytest.raises(OSError, match="OS file watch limit reached"):
            await w.init()

    uvloop.run(main())


def test_watching_that_fails_later_ends_the_watcher_to_be_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> AsyncIterator[set[tuple[Any, str]]]:
        yield {(2, f"{tmp_path}/a.py")}
        raise OSError("inotify went away")

    async def main() -> None:
        w = watcher(Channel(), tmp_path)
        await w.init()
        task = asyncio.get_running_loop().create_task(w._follow(broken()))
        task.add_done_callback(w._ended)
        await until(task.done)
        await asyncio.sleep(0)
        assert w._exit is not None and w._exit.result() == 1
        assert w._debounce.paths == {f"{tmp_path}/a.py"}
        w._ended(task)  # a second look changes nothing
        await w.prepare_for_shutdown()

    with caplog.at_level(logging.ERROR, "prefork.master"):
        uvloop.run(main())
    assert "[reload] watching failed; leaving to be replaced" in caplog.text
    assert "inotify went away" in caplog.text


def test_a_timer_that_runs_early_waits_for_the_deadline(tmp_path: Path) -> None:
    channel = Channel()

    async def main() -> None:
        w = watcher(channel, tmp_path, delay=0.2)
        await w.init()
        w._debounce.changed(["/x/a.py"], w._now())
        w._arm()
        first = w._timer
        w._fire()  # early: nothing yet, armed again
        assert channel.messages() == [] and first is not None and first.cancelled()
        assert w._timer is not None and not w._timer.cancelled()
        await until(channel.messages)
        assert w._timer is None
        await w.prepare_for_shutdown()

    uvloop.run(main())


def test_a_watcher_stops_even_when_watchfiles_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_watch, "STOP_WAIT", 0.01)

    async def main() -> None:
        w = watcher(Channel(), tmp_path)
        await w.init()
        w._debounce.changed(["/x/a.py"], w._now())
        w._arm()
        real, w._task = w._task, asyncio.get_running_loop().create_future()
        await w.prepare_for_shutdown()
        assert w._exit is not None and w._exit.result() == 0
        assert w._timer is not None and w._timer.cancelled()
        await real

    with caplog.at_level(logging.WARNING, "prefork.master"):
        uvloop.run(main())
    assert "[reload] watchfiles did not stop in 0.01s; leaving anyway" in caplog.text


def test_the_watch_is_what_the_watcher_is_given() -> None:
    assert Watch.__dataclass_fields__.keys() == {"dirs", "filter", "delay"}

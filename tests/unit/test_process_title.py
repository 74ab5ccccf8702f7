"""What ps shows of a process, and what the master reads of a worker's memory and of its own
process (the ``process_*`` metrics)."""

from __future__ import annotations

import os
import resource
import sys
import time
import types
from pathlib import Path

import pytest

from prefork.master import _process
from prefork.ops._accounts import ProcessUsage


def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, object]]:
    calls: list[tuple[int, object]] = []
    monkeypatch.setattr(_process, "_prctl", lambda option, value: calls.append((option, value)))
    return calls


def test_the_title_goes_through_setproctitle_then_the_short_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = recorded(monkeypatch)
    titles: list[str] = []
    fake = types.ModuleType("setproctitle")
    fake.setproctitle = titles.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "setproctitle", fake)
    _process.set_title("prefork: master [app:app]", "prefork: master but longer")
    assert titles == ["prefork: master [app:app]"]
    assert calls == [(_process.PR_SET_NAME, b"prefork: master")]  # 15 bytes


def test_without_setproctitle_only_the_short_name_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = recorded(monkeypatch)
    monkeypatch.setitem(sys.modules, "setproctitle", None)  # import raises ImportError
    _process.set_title("prefork: web worker 3 gen 2", "prefork:web")
    assert calls == [(_process.PR_SET_NAME, b"prefork:web")]


def test_rss_of_a_live_process_and_of_none() -> None:
    mine = _process.rss(os.getpid())
    assert mine is not None and mine > 1 << 20
    assert _process.rss(2**22 + 12345) is None  # above pid_max: no such process


def test_usage_of_this_process() -> None:
    usage = _process.usage()
    assert usage is not None
    assert 0 < usage.cpu_seconds < time.process_time() + 1
    assert 1 << 20 < usage.resident_bytes < usage.virtual_bytes
    assert 3 <= usage.open_fds <= usage.max_fds == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert time.time() - 86400 < usage.start_time <= time.time()


def fake_proc(root: Path, stat: str, boot: str = "btime 1700000000\n") -> str:
    (root / "self" / "fd").mkdir(parents=True)
    for fd in range(5):
        (root / "self" / "fd" / str(fd)).touch()
    (root / "self" / "stat").write_text(stat)
    (root / "stat").write_text(f"cpu  1 2 3 4\n{boot}processes 7\n")
    return str(root)


def test_usage_read_as_prometheus_client_reads_it(tmp_path: Path) -> None:
    # the name (in parentheses) may hold spaces and parentheses
    stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 500 0 0 0 150 25 0 0 20 0 1 0 12000 4096000 300 x"
    usage = _process.usage(fake_proc(tmp_path, stat))
    ticks = _process.CLOCK_TICKS
    assert usage == ProcessUsage(
        cpu_seconds=175 / ticks,  # user and system
        resident_bytes=300 * _process.PAGE_SIZE,
        virtual_bytes=4096000,
        open_fds=5,
        max_fds=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        start_time=1700000000 + 12000 / ticks,  # boot time plus when it started after boot
    )


@pytest.mark.parametrize(
    ("stat", "boot"),
    [
        ("42 (a) S 1 42 42 0 -1 4194560 500 0 0 0 150 25", "btime 1700000000\n"),  # cut short
        ("42 (a) S 1 42 42 0 -1 4194560 500 0 0 0 150 25 0 0 20 0 1 0 12 4096 3", "intr 1\n"),
    ],
)
def test_usage_unknown_without_proc_or_what_it_should_say(
    tmp_path: Path, stat: str, boot: str
) -> None:
    assert _process.usage(str(tmp_path / "none")) is None  # no /proc: not Linux
    assert _process.usage(fake_proc(tmp_path, stat, boot)) is None

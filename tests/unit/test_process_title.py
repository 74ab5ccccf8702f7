"""What ps shows of a process, and what the master reads of a worker's memory."""

from __future__ import annotations

import os
import sys
import types

import pytest

from prefork import _process


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

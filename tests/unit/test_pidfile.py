"""The pid file: refused when another live process holds it, atomic, removed only if ours."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefork import ConfigError, Master, Worker
from prefork.master._pidfile import claim, release


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_claim_writes_our_pid_and_release_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "m.pid"
    claim(str(path), os.getpid())
    assert path.read_text() == f"{os.getpid()}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pid"]  # no temporary left behind
    release(str(path), os.getpid())
    assert not path.exists()


def test_a_live_process_in_the_file_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "m.pid"
    path.write_text(f"{os.getppid()}\n")  # alive: the process that started the tests
    with pytest.raises(ConfigError) as info:
        claim(str(path), os.getpid())
    assert str(info.value) == (
        f"pid file {str(path)!r} names running process {os.getppid()}; is another master "
        "running? stop it, or choose another --pid"
    )
    assert path.read_text() == f"{os.getppid()}\n"


def test_a_stale_file_or_one_that_is_not_a_pid_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "m.pid"
    for stale in (f"{dead_pid()}\n", "garbage", "", "\u00b2", "0", "9" * 20, "\udcff"):
        path.write_bytes(stale.encode(errors="surrogateescape"))  # the last: byte 0xff
        claim(str(path), os.getpid())
        assert path.read_text() == f"{os.getpid()}\n"


def test_release_leaves_another_masters_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "m.pid"
    path.write_text("12345\n")
    release(str(path), os.getpid())
    assert path.read_text() == "12345\n"
    release(str(tmp_path / "missing.pid"), os.getpid())  # nothing to do, no error


def test_a_missing_directory_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "m.pid"
    with pytest.raises(ConfigError, match=r"no directory '.*nowhere'; create it first"):
        claim(str(path), os.getpid())


def test_an_unwritable_place_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "m.pid"
    path.mkdir()  # a directory where the file should go: the rename fails
    with pytest.raises(ConfigError, match=r"cannot write pid file .*m\.pid'"):
        claim(str(path), os.getpid())
    assert [p.name for p in tmp_path.iterdir()] == ["m.pid"]


def test_a_master_refuses_a_pid_file_held_by_a_live_process(tmp_path: Path) -> None:
    path = tmp_path / "m.pid"
    path.write_text(f"{os.getppid()}\n")
    master = Master(pidfile=str(path))
    master.broker("web", Worker)
    with pytest.raises(ConfigError, match="names running process"):
        master.run()
    assert path.read_text() == f"{os.getppid()}\n"


def test_a_process_of_another_user_counts_as_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_yours(pid: int, signum: int) -> None:
        raise PermissionError(pid)

    path = tmp_path / "m.pid"
    path.write_text("4321\n")
    monkeypatch.setattr(os, "kill", not_yours)
    with pytest.raises(ConfigError, match="names running process 4321"):
        claim(str(path), os.getpid())

"""The master's side of ``prefork ctl upgrade`` in one process, without a fork or an exec:
the ``Upgrader`` step by step (asked, checked, refused or due, handed over, taken over) with
a fake console and the effects replaced; the check's output and verdict; the hand-over with
an exec that fails (everything as it was, the signals that waited delivered); what the new
image reads back (``PREFORK_UPGRADE``, the listeners, the channels with a frame half sent)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import selectors
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_supervisor import boot, make, policy

from prefork.core import _frames as frames
from prefork.core._events import (
    DrainRequested,
    Event,
    MessageReceived,
    ReloadRequested,
    StopRequested,
)
from prefork.core._handover import FORMAT
from prefork.core._options import ConfigError
from prefork.core._supervisor import Supervisor
from prefork.core._version import VERSION
from prefork.master import _process, _upgrade, _upgrade_check
from prefork.master._channels import Channels
from prefork.master._upgrade import Check, Relaunch
from prefork.master._upgrader import Upgrader

RELAUNCH = Relaunch("/venv/bin/python", ("python", "-m", "prefork", "serve", "app:app"), "/srv")


class FakeConsole:
    """What the upgrader tells the console: the refusals."""

    upgrades = 1

    def __init__(self) -> None:
        self.refused: list[str] = []

    def upgrade_refused(self, reason: str) -> None:
        self.refused.append(reason)


@pytest.fixture
def sel() -> Iterator[selectors.DefaultSelector]:
    with selectors.DefaultSelector() as made:
        yield made


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A non-blocking pipe (the check's output): its read end and write end."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def upgrader(
    sel: selectors.BaseSelector, sup: Supervisor | None = None
) -> tuple[Upgrader, FakeConsole, list[Event]]:
    sup = sup if sup is not None else make(policy("http", workers=2))
    boot(sup)
    console = FakeConsole()
    made = Upgrader(sup, console)  # type: ignore[arg-type]
    posted: list[Event] = []
    made.open(sel, {"http": []}, Channels(sel, posted.append, 1 << 20), lambda: [])
    made.relaunch = RELAUNCH
    return made, console, posted


def checking(
    monkeypatch: pytest.MonkeyPatch, pipe: tuple[int, int], pid: int = 4242
) -> list[tuple[Relaunch, float]]:
    """``start_check`` makes a ``Check`` of pid ``pid`` on ``pipe`` (no fork)."""
    started: list[tuple[Relaunch, float]] = []

    def start_check(relaunch: Relaunch, deadline: float) -> Check:
        started.append((relaunch, deadline))
        return Check(pid, pipe[0], deadline)

    monkeypatch.setattr(_upgrade, "start_check", start_check)
    return started


def check_ends(made: Upgrader, pipe: tuple[int, int], code: int = 0) -> None:
    """The check closes its output (read as the selector says: what is left, then the end)
    and exits with ``code``."""
    os.close(pipe[1])
    made.read()
    made.read()
    made.reaped(_process.Reaped(4242, code, None))


# -- the Upgrader ---------------------------------------------------------------------------


def test_an_api_master_refuses_and_nothing_starts(sel: selectors.BaseSelector) -> None:
    made, _, _ = upgrader(sel)
    made.relaunch = None
    assert made.ask() == "in-place upgrade needs a master started by prefork serve"
    assert made.deadline() is None


def test_ask_starts_the_check_on_the_selector_with_a_deadline_past_the_boot_timeout(
    sel: selectors.BaseSelector, monkeypatch: pytest.MonkeyPatch, pipe: tuple[int, int]
) -> None:
    started = checking(monkeypatch, pipe)
    sup = make(policy("http", workers=2, boot_timeout=7.0), policy("jobs", boot_timeout=3.0))
    made, console, _ = upgrader(sel, sup)
    assert made.ask() == ""
    [(relaunch, deadline)] = started
    assert relaunch is RELAUNCH and made.deadline() == deadline
    key = sel.get_key(pipe[0])
    assert isinstance(key.data, Check) and key.data.pid == 4242
    assert made.ask() == "an upgrade is under way already"
    assert console.refused == []


def test_a_check_that_cannot_start_is_a_refusal(
    sel: selectors.BaseSelector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def start_check(relaunch: Relaunch, deadline: float) -> Check:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(_upgrade, "start_check", start_check)
    made, _, _ = upgrader(sel)
    why = made.ask()
    assert (
        why == "cannot start the check of the new code: [Errno 11] Resource temporarily unavailable"
    )
    assert made.deadline() is None


def test_a_check_that_passes_makes_the_upgrade_due_once_it_is_reaped_and_its_output_ended(
    sel: selectors.BaseSelector, monkeypatch: pytest.MonkeyPatch, pipe: tuple[int, int]
) -> None:
    checking(monkeypatch, pipe)
    handed: list[tuple[Any, ...]] = []
    monkeypatch.setattr(_upgrade, "export", lambda *a: ({"doc": 1}, [7, 8]))
    monkeypatch.setattr(_upgrade, "hand_over", lambda *a: handed.append(a))
    made, console, _ = upgrader(sel)
    made.hand_over_if_due()  # nothing due
    assert made.ask() == ""
    assert not made.reaped(_process.Reaped(99, 0, None))  # a stranger
    os.write(pipe[1], b"prefork: the options and the app are fine\n")
    made.read()
    assert made.reaped(_process.Reaped(4242, 0, None))
    assert made.deadline() is not None  # its output has not ended yet
    os.close(pipe[1])
    made.read()
    assert made.deadline() is None
    with pytest.raises(KeyError):
        sel.get_key(pipe[0])
    with pytest.raises(OSError):
        os.fstat(pipe[0])  # closed
    made.read()  # a stale selector key of the same turn: nothing to read
    assert handed == []
    made.hand_over_if_due()
    [(relaunch, doc, carried, waiting)] = handed
    assert (relaunch, doc, carried, waiting()) == (RELAUNCH, {"doc": 1}, [7, 8], [])
    assert console.refused == []
    made.hand_over_if_due()  # once
    assert len(handed) == 1


def test_a_check_that_fails_refuses_with_its_error_line(
    sel: selectors.BaseSelector, monkeypatch: pytest.MonkeyPatch, pipe: tuple[int, int]
) -> None:
    checking(monkeypatch, pipe)
    made, console, _ = upgrader(sel)
    assert made.ask() == ""
    os.write(pipe[1], b"noise\nprefork: error: cannot import app 'app:app': boom\nmore\n")
    check_ends(made, pipe, 2)
    assert console.refused == [
        "the installed prefork cannot start this master: cannot import app 'app:app': boom"
    ]
    made.hand_over_if_due()  # not due
    again = os.pipe()
    checking(monkeypatch, again)
    assert made.ask() == ""  # and a new one may start
    sel.unregister(again[0])
    for fd in again:
        os.close(fd)


def test_a_check_past_its_deadline_is_killed_and_refused(
    sel: selectors.BaseSelector, monkeypatch: pytest.MonkeyPatch, pipe: tuple[int, int]
) -> None:
    checking(monkeypatch, pipe)
    killed: list[int] = []
    monkeypatch.setattr(Check, "kill", lambda self: killed.append(self.pid))
    made, console, _ = upgrader(sel)
    made.expire(1e9)  # no check: nothing
    assert made.ask() == ""
    deadline = made.deadline()
    assert deadline is not None
    made.expire(deadline - 0.1)
    assert killed == [] and console.refused == []
    made.expire(deadline)
    assert killed == [4242]
    assert console.refused == [
        "the check of the new code did not end within --boot-timeout + 10s; it was killed"
    ]
    assert not made.reaped(_process.Reaped(4242, None, 9))  # then reaped as a stranger


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (
            ReloadRequested(),
            "a reload is running; upgrade once it is done (prefork ctl reload --wait)",
        ),
        (DrainRequested(), "http is draining; resume it first"),
        (StopRequested(), "the master is stopping"),
    ],
)
def test_what_came_in_the_way_of_a_due_upgrade_refuses_it(
    sel: selectors.BaseSelector,
    monkeypatch: pytest.MonkeyPatch,
    pipe: tuple[int, int],
    event: Event,
    why: str,
) -> None:
    checking(monkeypatch, pipe)
    monkeypatch.setattr(_upgrade, "hand_over", lambda *a: pytest.fail("handed over"))
    sup = make(policy("http", workers=2))
    made, console, _ = upgrader(sel, sup)
    assert made.ask() == ""
    check_ends(made, pipe)
    sup.handle(event, 1.0)
    assert made.ask() == "an upgrade is under way already"
    assert _upgrade.refusal(RELAUNCH, sup.ledger, False) == why  # asked now, refused for that
    made.hand_over_if_due()
    assert console.refused == [why]


def test_an_exec_that_fails_is_a_refusal_and_the_master_carries_on(
    sel: selectors.BaseSelector, monkeypatch: pytest.MonkeyPatch, pipe: tuple[int, int]
) -> None:
    checking(monkeypatch, pipe)

    def hand_over(*args: Any) -> None:
        raise OSError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(_upgrade, "hand_over", hand_over)
    monkeypatch.setattr(_upgrade, "export", lambda *a: ({}, []))
    made, console, _ = upgrader(sel)
    assert made.ask() == ""
    check_ends(made, pipe)
    made.hand_over_if_due()
    assert console.refused == ["cannot re-execute the master: [Errno 2] No such file or directory"]


def test_the_new_image_takes_over_the_records_and_the_channels(
    sel: selectors.BaseSelector,
) -> None:
    old = make(policy("http", workers=2))
    boot(old)
    ours, theirs = socket.socketpair()
    doc = {
        "supervisor": json.loads(json.dumps(old.export())),
        "channels": [
            {"worker": 1, "fd": ours.detach(), "pending": "", "outgoing": "", "open": True}
        ],
        "console": {"c": 1},
    }
    sup = make(policy("http", workers=2))
    console = FakeConsole()
    made = Upgrader(sup, console)  # type: ignore[arg-type]
    posted: list[Event] = []
    channels = Channels(sel, posted.append, 1 << 20)
    made.open(sel, {"http": []}, channels, lambda: [])
    opened: list[Any] = []
    actions, pids = made.take_over(doc, opened.append)
    assert opened == [{"c": 1}] and actions == []
    assert pids == {1: 101, 2: 102}
    assert channels.open(1) and not channels.open(2)
    assert made.said() == f"upgraded in place to prefork {VERSION} (upgrade 1)"
    theirs.close()
    channels.close_all()


# -- the effects: the check --------------------------------------------------------------------


def test_relaunch_runs_the_command_line_again_or_the_arguments_main_was_given() -> None:
    assert Relaunch.of_this_process("/srv") == Relaunch(
        sys.executable, tuple(sys.orig_argv), "/srv"
    )
    assert Relaunch.of_this_process("/srv", ["serve", "app:app"]) == Relaunch(
        sys.executable, (sys.executable, "-m", "prefork", "serve", "app:app"), "/srv"
    )


def test_the_check_keeps_the_end_of_its_output(pipe: tuple[int, int]) -> None:
    check = Check(5, pipe[0], 10.0)
    check.read()  # nothing yet
    assert check.output == b"" and not check.eof
    check.output = b"a" * Check.MAX_OUTPUT
    os.write(pipe[1], b"the end\n")
    check.read()
    assert len(check.output) == Check.MAX_OUTPUT and check.output.endswith(b"a" * 8 + b"the end\n")
    os.close(pipe[0])
    check.read()  # its end is gone: as good as its end
    assert check.eof and not check.done
    check.exited(_process.Reaped(5, None, 9))
    assert check.done and check.code == -9
    check.close()  # closed already: nothing


@pytest.mark.parametrize(
    ("output", "code", "why"),
    [
        (b"prefork: the options and the app are fine\n", 0, ""),
        (b"prefork: error: a\nlast\nprefork: error: b\n\n", 2, "b"),
        (b"Traceback ...\n  ValueError: x\n", 1, "ValueError: x"),
        (b"\n  \n", 3, "it ended with code 3"),
        (b"", -9, "signal 9"),
        (b"prefork: error: " + b"x" * 500, 2, "x" * 300),
        (b"\xff\xfe broken\n", 1, "\ufffd\ufffd broken"),
    ],
)
def test_the_checks_verdict_is_one_line(output: bytes, code: int, why: str) -> None:
    check = Check(5, -1, 10.0)
    check.output, check.code = output, code
    said = "the installed prefork cannot start this master: "
    assert check.verdict() == (said + why if why else "")


def test_kill_ends_the_checks_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    killed: list[tuple[int, int]] = []

    def killpg(pgid: int, signum: int) -> None:
        killed.append((pgid, signum))
        raise ProcessLookupError

    monkeypatch.setattr(os, "killpg", killpg)
    Check(4242, -1, 1.0).kill()  # gone already: nothing to say
    assert killed == [(4242, signal.SIGKILL)]


def test_start_check_runs_the_command_line_with_check_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[Any] = []
    closed: list[int] = []
    monkeypatch.setattr(_upgrade_check, "_close_on_exec", lambda: closed.append(3))

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        ran.append((path, argv, env))
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    def fork_worker(run: Callable[[], int], close: list[int], before: Callable[[], None]) -> int:
        ran.append(run())  # the child's side, without the fork (and without before())
        return 4242

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(_process, "fork_worker", fork_worker)
    monkeypatch.setattr(os, "setpgid", lambda pid, pgid: ran.append(("setpgid", pid, pgid)))
    monkeypatch.setenv(_upgrade.ENV, "5")
    check = Check.__new__(Check)
    try:
        check = _upgrade.start_check(RELAUNCH, 12.5)
        (path, argv, env), code, setpgid = ran
        assert path == RELAUNCH.executable and argv == [*RELAUNCH.argv, "--check-config"]
        assert env[_upgrade.FORMAT_ENV] == str(FORMAT) and _upgrade.ENV not in env
        assert code == 127 and closed == [3] and setpgid == ("setpgid", 4242, 4242)
        assert (check.pid, check.deadline) == (4242, 12.5)
        assert capsys.readouterr().err == (
            "prefork: error: cannot run /venv/bin/python: [Errno 2] No such file or directory\n"
        )
    finally:
        check.close()


def _opened_since(before: set[str]) -> set[str]:
    """The fds open now that were not in ``before``. Not a comparison of the two sets: a
    daemon thread an earlier test left (a slow request of a process test) may close its own
    socket meanwhile, which is no leak of ours (it failed the suite once that way)."""
    return set(os.listdir("/proc/self/fd")) - before


def test_start_check_that_cannot_fork_leaves_no_fd_open(monkeypatch: pytest.MonkeyPatch) -> None:
    def fork_worker(run: Callable[[], int], close: list[int], before: Callable[[], None]) -> int:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(_process, "fork_worker", fork_worker)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        _upgrade.start_check(RELAUNCH, 1.0)
    assert not _opened_since(before)


def test_close_on_exec_leaves_the_standard_streams_and_the_lower_fds() -> None:
    r, w = os.pipe()
    try:
        os.set_inheritable(r, True)
        os.set_inheritable(w, True)
        _upgrade_check._close_on_exec(max(r, w))
        assert os.get_inheritable(min(r, w)) and not os.get_inheritable(max(r, w))
    finally:
        os.close(r)
        os.close(w)


# -- the effects: the hand-over and what the new image reads -------------------------------


def test_an_exec_that_fails_leaves_everything_as_it_was_and_delivers_what_waited(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[Any] = []

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        memfd = int(env[_upgrade.ENV])
        seen.append(
            {
                "path": path,
                "argv": argv,
                "cwd": os.getcwd(),
                "blocked": signal.pthread_sigmask(signal.SIG_BLOCK, []),
                "pending": signal.sigpending(),
                "carried": os.get_inheritable(a.fileno()),
                "doc": json.loads(os.pread(memfd, 1000, 0)),
                "named": os.readlink(f"/proc/self/fd/{memfd}"),
            }
        )
        raise PermissionError(errno.EACCES, "Permission denied")

    delivered: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: delivered.append(signum))
    monkeypatch.setattr(os, "execve", execve)
    a, b = socket.socketpair()
    cwd = os.getcwd()
    relaunch = Relaunch("/venv/bin/python", ("python", "-m", "prefork"), str(tmp_path))
    before = set(os.listdir("/proc/self/fd"))
    try:
        with pytest.raises(PermissionError):
            _upgrade.hand_over(relaunch, {"k": 1}, [a.fileno()], lambda: [signal.SIGUSR1, 200])
        [got] = seen
        assert got["path"] == "/venv/bin/python" and got["argv"] == ["python", "-m", "prefork"]
        assert got["cwd"] == str(tmp_path) and got["carried"] and got["doc"] == {"k": 1}
        assert got["blocked"] >= _upgrade.BLOCKED and signal.SIGUSR1 in got["pending"]
        assert got["named"].startswith("/memfd:prefork-upgrade")
        assert os.getcwd() == cwd and not os.get_inheritable(a.fileno())
        assert signal.SIGUSR1 not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert delivered == [signal.SIGUSR1]  # once unblocked
        assert not _opened_since(before)  # the memfd closed
    finally:
        signal.signal(signal.SIGUSR1, old)
        a.close()
        b.close()


def memfd(content: bytes, name: str = _upgrade.MEMFD) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, content)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def test_incoming_without_an_upgrade_is_none() -> None:
    assert _upgrade.incoming({}, 5) is None


def test_incoming_takes_the_state_and_removes_the_variable() -> None:
    fd = memfd(json.dumps({"format": FORMAT, "pid": 5, "x": 1}).encode())
    environ = {_upgrade.ENV: str(fd), "PATH": "/bin"}
    assert _upgrade.incoming(environ, 5) == {"format": FORMAT, "pid": 5, "x": 1}
    assert environ == {"PATH": "/bin"}
    with pytest.raises(OSError):
        os.fstat(fd)  # read and closed


NOT_OURS = "does not name the state of an in-place upgrade (prefork ctl upgrade sets it for "


@pytest.mark.parametrize("where", ["garbage", "", "-1", "0", "1", "99999", "1" * 40])
def test_incoming_reads_nothing_that_is_not_an_upgrades_memfd(where: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _upgrade.incoming({_upgrade.ENV: where}, 5)
    assert str(raised.value) == (
        f"PREFORK_UPGRADE={where[:20]!r} {NOT_OURS}the master it re-executes; unset it)"
    )


def test_incoming_refuses_another_memfd() -> None:
    fd = memfd(b"{}", "something-else")
    try:
        with pytest.raises(ConfigError, match=re.escape(NOT_OURS)):
            _upgrade.incoming({_upgrade.ENV: str(fd)}, 5)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", ": Expecting property name enclosed in double quotes"),
        (b"[1, 2]", ": its state has format None, this prefork reads "),
        (json.dumps({"format": -1, "pid": 5}).encode(), ": its state has format -1, this "),
        (json.dumps({"format": FORMAT, "pid": 6}).encode(), ": its state is of process 6, not"),
        (json.dumps({"format": FORMAT}).encode(), ": its state is of process None, not this"),
    ],
)
def test_incoming_refuses_a_state_it_cannot_take(content: bytes, why: str) -> None:
    fd = memfd(content)
    with pytest.raises(ConfigError) as raised:
        _upgrade.incoming({_upgrade.ENV: str(fd)}, 5)
    assert why in str(raised.value) and NOT_OURS in str(raised.value)


def test_check_format_refuses_a_format_this_prefork_cannot_read() -> None:
    _upgrade.check_format({})  # not a check
    _upgrade.check_format({_upgrade.FORMAT_ENV: str(FORMAT)})
    with pytest.raises(ConfigError) as raised:
        _upgrade.check_format({_upgrade.FORMAT_ENV: "999"})
    assert str(raised.value) == (
        f"prefork {VERSION} reads the state of a master in format {FORMAT}, and the running "
        "master hands over format 999; restart it instead"
    )


def test_check_brokers_refuses_other_brokers_or_addresses_than_the_running_masters() -> None:
    running = {_upgrade.BROKERS_ENV: json.dumps({"http": ["127.0.0.1:8000"], "jobs": []})}
    _upgrade.check_brokers({}, {"web": ["[::]:80"]})  # not a check
    _upgrade.check_brokers(running, {"jobs": (), "http": ("127.0.0.1:8000",)})
    restart = "an upgrade keeps the running master's; restart it to change them"
    with pytest.raises(ConfigError) as raised:
        _upgrade.check_brokers(running, {"http": ["127.0.0.1:8000"], "reload": []})
    assert str(raised.value) == (
        f"the brokers would be http, reload, the running master has http, jobs: {restart}"
    )
    with pytest.raises(ConfigError) as raised:
        _upgrade.check_brokers(running, {"http": ["127.0.0.1:8001"], "jobs": []})
    assert str(raised.value) == (
        "broker 'http' would listen on 127.0.0.1:8001, the running master listens on "
        f"127.0.0.1:8000: {restart}"
    )
    with pytest.raises(ConfigError) as raised:
        _upgrade.check_brokers(running, {"http": ["127.0.0.1:8000"], "jobs": ["unix:/j"]})
    assert str(raised.value).startswith("broker 'jobs' would listen on unix:/j, the running ")
    assert "master listens on nothing: " in str(raised.value)
    for garbage in ("[", "[1]", '{"http": 1}'):
        with pytest.raises(ConfigError, match=r"^PREFORK_UPGRADE_BROKERS is not the running"):
            _upgrade.check_brokers({_upgrade.BROKERS_ENV: garbage}, {})


def test_listeners_are_taken_from_their_fds() -> None:
    sock = socket.socket()
    fd = sock.detach()
    [taken] = _upgrade.listeners({"sockets": {"http": [fd]}}, ["http"])["http"]
    assert taken.fileno() == fd
    taken.close()
    with pytest.raises(ConfigError, match="the master before the upgrade had a broker 'jobs'"):
        _upgrade.listeners({"sockets": {"jobs": []}}, ["http"])
    with pytest.raises(ConfigError, match="cannot take over the listening sockets: "):
        _upgrade.listeners({"sockets": {"http": [fd]}}, ["http"])  # closed now
    with pytest.raises(ConfigError, match="cannot take over the listening sockets: 'sockets'"):
        _upgrade.listeners({}, ["http"])


def test_take_over_refuses_a_state_that_does_not_fit(sel: selectors.BaseSelector) -> None:
    sup = make(policy("http", workers=2))
    channels = Channels(sel, lambda event: None, 1 << 20)
    with pytest.raises(ConfigError) as raised:
        _upgrade.take_over({"supervisor": sup.export()}, sup, channels, lambda doc: None)
    assert str(raised.value) == (
        "cannot take over from the master before the upgrade: KeyError: 'channels'"
    )


# -- the channels across the exec ------------------------------------------------------------


def test_a_frame_half_sent_either_way_is_finished_after_the_exec(
    sel: selectors.BaseSelector,
) -> None:
    posted: list[Event] = []
    old = Channels(sel, posted.append, 1 << 20)
    ours, worker = socket.socketpair()
    old.add(1, ours)
    gone, gone_worker = socket.socketpair()
    old.add(2, gone)
    heartbeat = frames.encode(frames.HEARTBEAT, {"requests": 3})
    worker.sendall(heartbeat[:5])  # the worker is half-way through a frame
    old.read(sel.get_key(ours).data)
    assert posted == []
    gone_worker.close()
    old.read(sel.get_key(gone).data)  # its end: no longer read
    stop = frames.encode(frames.STOP, {"replaced": True})
    channel = sel.get_key(ours).data
    channel.outgoing += stop[:4]  # what the master had not sent yet
    carried: list[int] = []

    def carry(sock: socket.socket) -> int:
        carried.append(sock.fileno())
        return sock.fileno()

    doc = json.loads(json.dumps(old.export(carry)))
    assert [d["open"] for d in doc] == [True, False] and carried == [ours.fileno(), gone.fileno()]
    sel.unregister(ours)  # the exec: the fds stay, the objects go
    ours.detach()
    gone.detach()
    new = Channels(sel, posted.append, 1 << 20)
    for d in doc:
        new.adopt(d)
    assert worker.recv(100) == stop[:4]  # flushed at once
    worker.sendall(heartbeat[5:])
    new.read(sel.get_key(carried[0]).data)
    assert posted == [MessageReceived(1, frames.HEARTBEAT, {"requests": 3})]
    assert new.open(1) and not new.open(2)
    new.close_all()
    worker.close()

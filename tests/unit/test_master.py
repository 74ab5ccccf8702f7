"""The master's effectful shell, without forking: actions turned into signals, signals into
events. (Real processes: tests/process/.)"""

from __future__ import annotations

import logging
import os
import signal
import socket

import pytest

from prefork import Master, Worker
from prefork.core._events import (
    DrainRequested,
    DumpStack,
    Kill,
    MeasureMemory,
    MemoryMeasured,
    ReloadRequested,
    ResumeRequested,
    ScaleRequested,
    StopRequested,
    Terminate,
)
from prefork.master._logs import default_logging as _default_logging
from prefork.master._loop import MAX_SLEEP, sleep_for
from prefork.master._signals import INTENTS, Intent, intent_event, sigterm_intent
from prefork.master._sockets import TurnedAway


def test_an_action_for_a_worker_already_reaped_signals_nobody(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reaper forgets a pid at once, while the supervisor hears of the exit only when the
    queued WorkerExited is handled: an action in between must not signal that pid (it may
    already belong to another process)."""
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    master = Master()
    master._perform(Kill(7))
    assert sent == []
    master._children.pids[7] = 4242
    master._perform(Terminate(7))
    master._perform(DumpStack(7))
    master._perform(Kill(7))
    assert sent == [(4242, signal.SIGTERM), (4242, signal.SIGUSR2), (4242, signal.SIGKILL)]


def test_a_worker_is_stopped_by_a_stop_frame_saying_whether_it_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A STOP frame, not SIGTERM, while the channel is open: only the frame says why (a
    reload closes WebSockets with 1012, a stop with 1001). A closed channel: SIGTERM."""
    import selectors

    from prefork.core import _frames
    from prefork.master._channels import Channels

    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    master = Master()
    master._children.pids[7] = 4242
    selector = selectors.DefaultSelector()
    master._children.channels = Channels(selector, lambda event: None, 1 << 20)
    ours, theirs = socket.socketpair()
    with ours, theirs, selector:
        master._children.channels.add(7, ours)
        master._perform(Terminate(7, replaced=True))
        master._perform(Terminate(7))
        decoder = _frames.Decoder(kinds=_frames.TO_WORKER)
        frames = decoder.feed(theirs.recv(4096))
        assert [(f.kind, f.body) for f in frames] == [
            ("stop", {"replaced": True}),
            ("stop", {"replaced": False}),
        ]
        assert sent == []
        master._children.channels.remove(7)
        master._perform(Terminate(7))
        assert sent == [(4242, signal.SIGTERM)]


def test_a_worker_that_died_but_is_not_reaped_yet_is_no_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def gone(pid: int, signum: int) -> None:
        raise ProcessLookupError(pid)

    monkeypatch.setattr(os, "kill", gone)
    master = Master()
    master._children.pids[3] = 4243
    master._perform(Terminate(3))  # no exception: the reaper will report the exit


def test_each_signal_has_its_intent_and_each_command_its_event() -> None:
    assert {
        signal.SIGHUP: Intent.RELOAD,
        signal.SIGTERM: Intent.DRAIN,
        signal.SIGUSR2: Intent.RESUME,
        signal.SIGINT: Intent.STOP,
        signal.SIGQUIT: Intent.STOP,
        signal.SIGTTIN: Intent.SCALE_UP,
        signal.SIGTTOU: Intent.SCALE_DOWN,
        signal.SIGUSR1: Intent.REOPEN_LOGS,
        signal.SIGCHLD: Intent.CHILD,
    } == INTENTS
    assert intent_event(Intent.RELOAD) == ReloadRequested()
    assert intent_event(Intent.DRAIN) == DrainRequested()
    assert intent_event(Intent.RESUME) == ResumeRequested()
    assert intent_event(Intent.STOP) == StopRequested()
    assert intent_event(Intent.TERMINATE) == StopRequested(delayed=True)
    assert intent_event(Intent.SCALE_UP) == ScaleRequested(delta=1)
    assert intent_event(Intent.SCALE_DOWN) == ScaleRequested(delta=-1)


def test_sigterm_stops_as_pid_1_and_under_systemd_and_drains_on_a_host() -> None:
    """``--sigterm auto`` (the default): where SIGTERM ends the service, it stops."""
    systemd = {"INVOCATION_ID": "0123abcd"}
    assert sigterm_intent("auto", 1, {}) == (
        Intent.TERMINATE,
        "SIGTERM stops (the master is PID 1: --sigterm auto)",
    )
    assert sigterm_intent("auto", 4242, systemd) == (
        Intent.TERMINATE,
        "SIGTERM stops (under systemd: --sigterm auto)",
    )
    assert sigterm_intent("auto", 4242, {"INVOCATION_ID": ""}) == (
        Intent.DRAIN,
        "SIGTERM drains, the master stays (on a host: --sigterm auto)",
    )
    assert sigterm_intent("stop", 4242, {}) == (Intent.TERMINATE, "SIGTERM stops (--sigterm stop)")
    assert sigterm_intent("drain", 1, systemd) == (
        Intent.DRAIN,
        "SIGTERM drains (--sigterm drain)",
    )


def test_status_is_the_supervisors_for_every_broker() -> None:
    master = Master()
    master.broker("web", Worker, workers=3)
    master.broker("jobs", Worker)
    status = master.status()
    assert list(status) == ["web", "jobs"]
    assert (status["web"]["desired"], status["jobs"]["desired"]) == (3, 1)


def test_with_no_logging_set_up_the_master_shows_its_info_lines() -> None:
    root, ours = logging.getLogger(), logging.getLogger("prefork")
    root.handlers[:] = []
    ours.setLevel(logging.NOTSET)
    _default_logging()
    assert len(ours.handlers) == 1 and ours.level == logging.INFO
    _default_logging()  # once only
    assert len(ours.handlers) == 1


def test_logging_the_user_set_up_is_left_alone() -> None:
    root, ours = logging.getLogger(), logging.getLogger("prefork")
    root.handlers[:] = [logging.NullHandler()]
    _default_logging()
    assert ours.handlers == []
    root.handlers[:] = []
    ours.setLevel(logging.WARNING)
    _default_logging()
    assert ours.level == logging.WARNING  # a level the user chose stays


def test_a_drained_listener_turns_connections_away_a_bounded_number_per_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    try:
        monkeypatch.setattr(TurnedAway, "PER_TURN", 2)
        TurnedAway(b"go away\n").accept(listener)  # two of three, then back to the loop
        assert [c.recv(100) for c in clients[:2]] == [b"go away\n", b"go away\n"]
        TurnedAway(b"").accept(listener)  # the third: a reset; then nothing is waiting
        with pytest.raises(ConnectionResetError):
            clients[2].recv(100)
    finally:
        listener.close()
        for c in clients:
            c.close()


def test_memory_is_measured_for_workers_still_known(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker reaped (or unreadable) since the supervisor asked is left out."""
    master = Master()
    master._children.pids.update({1: 101, 2: 102})
    monkeypatch.setattr("prefork.master._process.rss", lambda pid: None if pid == 102 else 5 << 20)
    master._perform(MeasureMemory((1, 2, 3)))
    assert list(master._pending) == [MemoryMeasured(((1, 5 << 20),))]


def test_the_loop_sleeps_until_the_nearest_deadline_and_never_past_a_day() -> None:
    assert sleep_for(None, None, 5.0) is None  # idle: nothing to wake for
    assert sleep_for(9.0, None, 5.0) == 4.0
    assert sleep_for(9.0, 6.0, 5.0) == 1.0
    assert sleep_for(None, 4.0, 5.0) == 0.0  # overdue: at once
    # epoll's timeout is an int of milliseconds: 24.8 days would overflow it.
    assert sleep_for(5.0 + 30 * 86400, None, 5.0) == MAX_SLEEP == 86400.0


def test_a_worker_of_a_template_that_is_gone_fails_to_spawn_and_one_reaped_early_is_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With templates the template names each worker; the master's side of two races: the
    template left before the request (a failed spawn), and the worker was reaped before the
    template named it (started, then exited, in that order)."""
    import selectors

    from prefork.core._events import Spawn, SpawnFailed, WorkerExited, WorkerSpawned
    from prefork.master._process import Reaped

    master = Master()
    master.broker("web", Worker, template=True)
    with selectors.DefaultSelector() as selector:
        master._children.open(selector, list)
        master._perform(Spawn(1, "web", 1))
        assert list(master._pending) == [
            SpawnFailed(1, "the template of generation 1 is gone"),
        ]
        master._pending.clear()
        ours, theirs = socket.socketpair()
        with theirs:
            master._children.named(2, 4242, ours, Reaped(4242, None, 9))
            assert list(master._pending) == [WorkerSpawned(2, 4242), WorkerExited(2, None, 9)]
            assert master._children.pids == {} and ours.fileno() < 0
        master._children.not_named(3, "no", False)
        assert master._pending[-1] == SpawnFailed(3, "no", backoff=False)


def test_a_signal_for_a_worker_a_template_has_not_named_goes_to_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Kill for a worker whose pid is not known yet (with templates: asked for, not named)
    signals no pid; the template pool holds it for the worker once named."""
    import selectors

    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    master = Master()
    with selectors.DefaultSelector() as selector:
        master._children.open(selector, list)
        held: list[tuple[int, int]] = []
        monkeypatch.setattr(
            master._children.live_templates(),
            "signal",
            lambda worker_id, signum: held.append((worker_id, signum)) or True,
        )
        master._perform(Kill(5))
    assert held == [(5, signal.SIGKILL)] and sent == []

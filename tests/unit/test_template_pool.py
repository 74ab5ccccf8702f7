"""The master's side of the templates (``TemplatePool``), on real socketpairs with the test
playing the template (``_template.send``/``receive``): no process is forked."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from prefork.core._events import Event, TemplateExited, TemplateReady
from prefork.master import _template
from prefork.master._process import Identity, Reaped
from prefork.master._templates import NAME_MAX, REMEMBER, REMEMBER_MOST, TemplatePool
from prefork.worker import Worker


class Harness:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.events: list[Event] = []
        self.spawned: list[tuple[int, int, Reaped | None]] = []
        self.failed: list[tuple[int, str, bool]] = []
        self.channels: list[socket.socket] = []
        self.pool = TemplatePool(self.selector, self.events.append, self._spawned, self._failed)
        self.theirs: socket.socket | None = None

    def _spawned(self, worker_id: int, pid: int, channel: socket.socket, dead: Any) -> None:
        self.spawned.append((worker_id, pid, dead))
        self.channels.append(channel)

    def _failed(self, worker_id: int, reason: str, backoff: bool) -> None:
        self.failed.append((worker_id, reason, backoff))

    def start(self, pid: int = 4242, generation: int = 1) -> socket.socket:
        """Start a template that is the test: returns its end of the link."""

        def fork(link: socket.socket, ours: int) -> int:
            self.theirs = socket.socket(fileno=os.dup(link.fileno()))
            assert ours != link.fileno()
            return pid

        self.pool.start("web", generation, fork)
        assert self.theirs is not None
        return self.theirs

    def read_all(self) -> None:
        for key, _ in self.selector.select(0):
            self.pool.read(key.data)

    def close(self) -> None:
        self.pool.close_all()
        for channel in self.channels:
            channel.close()
        self.selector.close()


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def test_a_template_says_ready_and_forks_a_worker_on_request(h: Harness) -> None:
    theirs = h.start()
    assert len(h.pool.fds()) == 1
    _template.send(theirs, {"ready": True})
    h.read_all()
    assert h.events == [TemplateReady("web", 1)]
    assert h.pool.request(7, "web", 1, now=1.0) == ""
    assert len(h.pool.fds()) == 2  # the link, and the worker's channel until it is named
    message, fds = _template.receive(theirs)
    assert message == {"worker": 7} and len(fds) == 1
    with socket.socket(fileno=fds[0]) as channel:
        channel.sendall(b"hi")
        _template.send(theirs, {"worker": 7, "pid": 5000})
        h.read_all()
        assert h.spawned == [(7, 5000, None)]
        assert h.channels[0].recv(2) == b"hi"  # the master's end of the worker's channel


def test_a_worker_reaped_before_the_template_named_it_is_reported_both_ways(h: Harness) -> None:
    theirs = h.start()
    h.pool.request(7, "web", 1, now=1.0)
    _template.receive(theirs)[1] and None
    dead = Reaped(5000, None, 9)
    h.pool.reaped(Reaped(5001, 0, None), now=0.5)  # someone else's, before the request
    h.pool.reaped(dead, now=1.5)
    _template.send(theirs, {"worker": 7, "pid": 5000})
    h.read_all()
    assert h.spawned == [(7, 5000, dead)]


def test_a_pid_reaped_before_the_request_is_not_the_worker(h: Harness) -> None:
    theirs = h.start()
    h.pool.reaped(Reaped(5000, 0, None), now=0.5)
    h.pool.request(7, "web", 1, now=1.0)
    _template.send(theirs, {"worker": 7, "pid": 5000})
    h.read_all()
    assert h.spawned == [(7, 5000, None)]


def test_unknown_children_are_remembered_a_while_and_a_few(h: Harness) -> None:
    for pid in range(1, REMEMBER_MOST + 10):
        h.pool.reaped(Reaped(pid, 0, None), now=1.0)
    assert len(h.pool._unknown) == REMEMBER_MOST
    h.pool.reaped(Reaped(99999, 0, None), now=2.0 + REMEMBER)
    assert list(h.pool._unknown) == [99999]


def test_a_signal_for_a_worker_not_named_yet_is_sent_once_it_is(h: Harness) -> None:
    theirs = h.start()
    assert not h.pool.signal(7, signal.SIGKILL)  # nobody asked for 7
    h.pool.request(7, "web", 1, now=1.0)
    assert h.pool.signal(7, signal.SIGKILL)
    victim = subprocess.Popen(["sleep", "30"])
    try:
        _template.send(theirs, {"worker": 7, "pid": victim.pid})
        h.read_all()
        assert victim.wait(5) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            victim.kill()
        victim.wait()


def test_a_signal_for_a_worker_already_gone_is_not_sent(h: Harness) -> None:
    theirs = h.start()
    h.pool.request(7, "web", 1, now=1.0)
    h.pool.signal(7, signal.SIGKILL)
    h.pool.reaped(Reaped(999_999_999 % (1 << 22) + 1, None, 9), now=1.5)
    pid = next(iter(h.pool._unknown))
    _template.send(theirs, {"worker": 7, "pid": pid})
    h.read_all()  # no kill of a pid that may be someone else's now
    assert h.spawned[0][2] is not None


def test_a_worker_the_template_could_not_fork_fails(h: Harness) -> None:
    theirs = h.start()
    h.pool.request(7, "web", 1, now=1.0)
    _template.send(theirs, {"worker": 7, "error": "OSError: no memory"})
    h.read_all()
    assert h.failed == [(7, "the template could not fork it: OSError: no memory", True)]
    _template.send(theirs, {"worker": 7, "pid": 3})  # not asked (any more): ignored
    h.read_all()
    assert h.spawned == []


def test_asking_a_template_that_is_gone_or_closed(h: Harness) -> None:
    assert h.pool.request(7, "web", 1, now=1.0) == "the template of generation 1 is gone"
    theirs = h.start()
    theirs.close()
    why = h.pool.request(7, "web", 1, now=1.0)
    assert why.startswith("the template of generation 1 could not be asked: ")
    h.pool.stop("web", 1, kill=False)  # closes the link
    assert h.pool.request(8, "web", 1, now=1.0) == "the template of generation 1 is gone"
    h.pool.stop("web", 2, kill=False)  # no such template: nothing


def test_a_template_reaped_fails_its_open_requests_and_says_why(h: Harness) -> None:
    theirs = h.start(pid=4242)
    message = "Traceback (most recent call last):\nRuntimeError: broken"
    _template.send(theirs, {"error": message})
    h.pool.request(7, "web", 1, now=1.0)
    theirs.close()
    h.pool.reaped(Reaped(4242, 1, None), now=2.0)
    assert h.failed == [
        (7, "the template of generation 1 exited before it forked the worker", False),
    ]
    assert h.events == [TemplateExited("web", 1, 1, None, message)]
    assert h.pool.fds() == []
    h.pool.stop("web", 1, kill=True)  # gone: nothing to kill


def test_a_template_that_cannot_be_forked_is_reported_exited() -> None:
    h = Harness()

    def fork(link: socket.socket, ours: int) -> int:
        raise OSError("Resource temporarily unavailable")

    h.pool.start("web", 1, fork)
    assert h.events == [TemplateExited("web", 1, None, None, "Resource temporarily unavailable")]
    assert h.pool.fds() == []
    h.close()


@pytest.mark.parametrize(
    "nonsense",
    [b"not json", b"[" * 5000 + b"]" * 5000, b"1" * 5000],
    ids=["not-json", "nested-5000-deep", "5000-digits"],
)
def test_a_template_that_talks_nonsense_is_killed(h: Harness, nonsense: bytes) -> None:
    victim = subprocess.Popen(["sleep", "30"])
    try:
        theirs = h.start(pid=victim.pid)
        theirs.send(nonsense)
        h.read_all()
        assert victim.wait(5) == -signal.SIGKILL
        assert h.pool.fds() == []
        h.pool.read(h.pool._links[("web", 1)])  # a closed link reads nothing
    finally:
        with contextlib.suppress(ProcessLookupError):
            victim.kill()
        victim.wait()


def test_fds_a_template_sends_are_closed_and_the_end_of_its_link_is_noticed(h: Harness) -> None:
    theirs = h.start()
    r, w = os.pipe()
    try:
        _template.send(theirs, {"ready": True}, r)
        theirs.close()
        h.read_all()
        assert h.events == [TemplateReady("web", 1)]
        assert h.pool.fds() == []  # the link ended: closed, until the template is reaped
    finally:
        os.close(r)
        os.close(w)


def test_a_message_that_is_not_an_object_is_ignored(h: Harness) -> None:
    theirs = h.start()
    theirs.send(b"[1, 2]")
    h.read_all()
    assert h.events == [] and h.pool.fds() != []


def test_what_a_template_left_open_is_passed_on_checked(h: Harness) -> None:
    theirs = h.start()
    _template.send(theirs, {"ready": True, "threads": ["poll", 3], "sockets": 2})
    h.read_all()
    assert h.events == [TemplateReady("web", 1, ("poll",), 2)]
    theirs = h.start(pid=4343, generation=2)
    _template.send(theirs, {"ready": True, "threads": "poll", "sockets": True})
    h.read_all()
    assert h.events[1:] == [TemplateReady("web", 2, (), 0)]


def test_a_sick_templates_report_is_cut_to_bounds(h: Harness) -> None:
    """A thread name of 20,000 characters and a negative socket count: the names are cut
    (they reach a log line), the count read as none."""
    theirs = h.start()
    _template.send(theirs, {"ready": True, "threads": ["x" * 20_000], "sockets": -7})
    h.read_all()
    assert h.events == [TemplateReady("web", 1, ("x" * NAME_MAX,), 0)]


def test_left_open_names_the_threads_and_counts_the_new_sockets() -> None:
    before = _template.socket_inodes()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="left-running")
    thread.start()
    try:
        with socket.socket() as opened:
            left = _template.left_open(before)
            assert "left-running" in left["threads"]
            assert threading.main_thread().name not in left["threads"]
            assert left["sockets"] == 1
            assert os.fstat(opened.fileno()).st_ino in _template.socket_inodes()
        assert _template.left_open(before)["sockets"] == 0
    finally:
        stop.set()
        thread.join()


def test_receive_at_the_end_of_a_link_gives_the_fds_it_carried() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        a.close()
        assert _template.receive(b) == (None, [])


# --- the template's own side, run in this process (no fork: every path here answers first) --


class Refusing(Worker):
    """A worker type whose ``before_fork`` raises: the template answers without forking."""

    @classmethod
    def before_fork(cls, options: Mapping[str, Any]) -> None:
        raise RuntimeError("no fork today")


class Unimportable(Worker):
    @classmethod
    def prepare_template(cls, options: Mapping[str, Any]) -> None:
        raise ImportError("no module named 'nope'")


def template_spec(worker: type, link: socket.socket) -> _template.TemplateSpec:
    return _template.TemplateSpec(
        broker="web",
        generation=1,
        worker=worker,
        options={},
        link=link,
        master_pid=os.getpid(),
        worker_spec=lambda cls, i, channel: None,  # type: ignore[arg-type,return-value]
        identity=Identity(),
    )


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """No process title change and no gc.freeze() in the test process."""
    monkeypatch.setattr(_template._process, "set_title", lambda title, short: None)
    monkeypatch.setattr(_template.gc, "freeze", lambda: None)


def test_the_template_answers_each_request_and_leaves_at_the_end_of_its_link(quiet: None) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        channel_a, channel_b = socket.socketpair()
        with channel_a, channel_b:
            _template.send(ours, {"worker": 3}, channel_b.fileno())
            _template.send(ours, {"worker": "x"})  # not a request: ignored
            _template.send(ours, {"worker": 4})  # no channel: ignored
            ours.shutdown(socket.SHUT_WR)
            assert _template.run(template_spec(Refusing, theirs)) == 0
        ready, fds = _template.receive(ours)  # (this process may run other tests' threads)
        assert fds == [] and ready is not None
        assert (ready["ready"], ready["sockets"], type(ready["threads"])) == (True, 0, list)
        answer = {"worker": 3, "error": "RuntimeError: no fork today"}
        assert _template.receive(ours) == (answer, [])


def test_a_template_that_cannot_import_says_why_and_leaves(quiet: None) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        assert _template.run(template_spec(Unimportable, theirs)) == 1
        message, _ = _template.receive(ours)
        assert message is not None and "ImportError: no module named 'nope'" in message["error"]


def test_a_worker_waits_for_the_master_to_adopt_it() -> None:
    me, parent = os.getpid(), os.getppid()
    _template.wait_for_parent(me, parent)  # adopted already
    with pytest.raises(OSError, match=f"the worker's parent is {parent}, not the master"):
        _template.wait_for_parent(me, me)  # another process adopted it: the master is gone
    with pytest.raises(OSError, match="not the master"):
        _template.wait_for_parent(parent, me, timeout=0.01)  # never adopted in time

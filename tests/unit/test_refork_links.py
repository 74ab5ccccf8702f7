"""The pieces of a refork around the processes, on real sockets, nothing forked: a PROMOTED
frame's fd through the master's channels, what the master keeps of a worker's answer (only
what it asked for, from a child of its own), the template's standby pid on its link, the
worker's answer on its channel, and what a promoted template gives back."""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefork.config import MasterConfig
from prefork.core import _frames as frames
from prefork.core._events import Event, MessageReceived, Promote
from prefork.master import _child, _promote, _template
from prefork.master._channels import Channels
from prefork.master._children import Children
from prefork.master._process import Reaped
from prefork.worker import Worker


def seqpacket() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


# --- the master's channels ---------------------------------------------------------------


class Read:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.events: list[Event] = []
        self.handed: list[tuple[int, Any, list[int]]] = []
        self.ours, self.worker = socket.socketpair()

    def promoted(self, worker_id: int, body: Any, fds: list[int]) -> Any:
        self.handed.append((worker_id, body, fds))
        return {"kept": body}

    def read(self, hook: bool = True) -> None:
        channels = Channels(
            self.selector, self.events.append, 1 << 20, self.promoted if hook else None
        )
        channels.add(7, self.ours)
        channels.read(channels._by_worker[7])

    def close(self) -> None:
        self.ours.close()
        self.worker.close()
        self.selector.close()


@pytest.fixture
def rd() -> Iterator[Read]:
    r = Read()
    yield r
    r.close()


def test_a_promoted_frame_brings_its_fd_to_the_hook_and_the_hooks_body_is_posted(rd: Read) -> None:
    a, b = seqpacket()
    data = frames.encode(frames.HEARTBEAT) + frames.encode(frames.PROMOTED, {"pid": 5})
    socket.send_fds(rd.worker, [data], [a.fileno()])
    rd.read()
    ((worker_id, body, (fd,)),) = rd.handed
    assert (worker_id, body) == (7, {"pid": 5}) and is_open(fd)
    assert rd.events == [
        MessageReceived(7, frames.HEARTBEAT, None),
        MessageReceived(7, frames.PROMOTED, {"kept": {"pid": 5}}),
    ]
    for s in (a, b):
        s.close()
    os.close(fd)


def test_fds_with_other_frames_or_without_a_hook_are_closed(rd: Read) -> None:
    a, b = seqpacket()
    socket.send_fds(rd.worker, [frames.encode(frames.HEARTBEAT)], [a.fileno()])
    socket.send_fds(rd.worker, [frames.encode(frames.PROMOTED, {})], [b.fileno()])
    a.close()
    rd.read(hook=False)
    assert rd.handed == []
    assert rd.events[-1] == MessageReceived(7, frames.PROMOTED, {})
    # Nothing else holds a's peer: b reads the end, so the fd passed for a was closed.
    b.setblocking(False)
    assert b.recv(10) == b""
    b.close()


def test_two_promoted_frames_in_one_read_the_last_takes_the_fd(rd: Read) -> None:
    a, b = seqpacket()
    two = frames.encode(frames.PROMOTED, 1) + frames.encode(frames.PROMOTED, 2)
    socket.send_fds(rd.worker, [two], [a.fileno()])
    rd.read()
    assert [(body, len(fds)) for _, body, fds in rd.handed] == [(1, 0), (2, 1)]
    os.close(rd.handed[1][2][0])
    for s in (a, b):
        s.close()


def test_an_fd_with_a_bad_frame_is_closed(rd: Read) -> None:
    a, b = seqpacket()
    socket.send_fds(rd.worker, [b"\x00\x00\x00\x02{]"], [a.fileno()])
    a.close()
    rd.read()
    assert type(rd.events[-1]).__name__ == "ChannelBroken"
    b.setblocking(False)
    assert b.recv(10) == b""
    b.close()


# --- what the master keeps of an answer --------------------------------------------------


class Kids:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.events: list[Event] = []
        self.children = Children(MasterConfig(), {}, {}, {}, {}, self.events.append)
        self.children.open(self.selector, list)
        self.ours, self.worker = socket.socketpair()
        self.children.live_channels().add(3, self.ours)

    def close(self) -> None:
        self.children.close()
        self.worker.close()
        self.selector.close()


@pytest.fixture
def kids() -> Iterator[Kids]:
    k = Kids()
    yield k
    k.close()


def test_promote_sends_the_frame_and_a_closed_channel_answers_at_once(kids: Kids) -> None:
    kids.children.promote(Promote(3, "web", 2))
    data = kids.worker.recv(100)
    assert frames.Decoder().feed(data) == [frames.Message(frames.PROMOTE, {"generation": 2})]
    kids.children.promote(Promote(99, "web", 2))
    assert kids.events == [
        MessageReceived(99, frames.PROMOTED, {"generation": 2, "error": "its channel is closed"})
    ]


@pytest.mark.parametrize(
    ("body", "asked", "fds", "why"),
    [
        ("odd", True, 1, "it named no template"),
        ({"generation": 2, "error": "not fork safe"}, True, 0, "not fork safe"),
        ({"generation": 2, "pid": True}, True, 1, "it named no template"),
        ({"generation": 2, "pid": 1}, False, 1, "it was not asked to fork the template of gen"),
        ({"generation": 3, "pid": 1}, True, 1, "it was not asked to fork the template of gen"),
        ({"generation": 2, "pid": 1}, True, 0, "the template's link did not come with the answer"),
        ({"generation": 2, "pid": 1}, True, 2, "the template's link did not come with the answer"),
        ({"generation": 2, "pid": 1}, True, 1, "process 1 is not a child of the master"),
        ({"generation": 2, "pid": 999_999_998}, True, 1, "process 999999998 is not a child"),
    ],
)
def test_an_answer_the_master_refuses_closes_what_came_and_says_why(
    kids: Kids, body: Any, asked: bool, fds: int, why: str
) -> None:
    if asked:
        kids.children.promote(Promote(3, "web", 2))
    pairs = [seqpacket() for _ in range(fds)]
    passed = [os.dup(a.fileno()) for a, _ in pairs]
    said = kids.children.promoted(3, body, passed)
    assert why in said["error"]
    assert not any(is_open(fd) for fd in passed)
    for a, b in pairs:
        a.close()
        b.close()


def test_an_fd_that_is_not_a_socket_is_closed(kids: Kids, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)
    kids.children.promote(Promote(3, "web", 2))
    said = kids.children.promoted(3, {"generation": 2, "pid": 1}, [fd])
    assert "did not come" in said["error"] and not is_open(fd)


@pytest.fixture
def child() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_the_link_of_a_child_of_the_master_is_kept_as_its_template(kids: Kids, child: int) -> None:
    kids.children.promote(Promote(3, "web", 2))
    a, b = seqpacket()
    said = kids.children.promoted(3, {"generation": 2, "pid": child}, [os.dup(a.fileno())])
    assert said == {"generation": 2, "pid": child}
    assert kids.children.template_pids() == {("web", 2): child}
    _template.send(b, {"standby": 4321})
    for key, _ in kids.selector.select(1):
        if isinstance(key.data, _template_link_type()):
            kids.children.read_link(key.data)
    assert kids.children.standbys() == {("web", 2): 4321}
    # The same generation again, or a stream socket, is refused; so is a pid reaped already.
    kids.children.promote(Promote(3, "web", 2))
    said = kids.children.promoted(3, {"generation": 2, "pid": child}, [os.dup(a.fileno())])
    assert said["error"] == "generation 2 has a template already"
    kids.children.promote(Promote(3, "web", 4))
    s1, s2 = socket.socketpair()
    said = kids.children.promoted(3, {"generation": 4, "pid": child}, [os.dup(s1.fileno())])
    assert said["error"] == "what it passed is not a template's link"
    kids.children.live_templates().reaped(Reaped(999_999_999, 0, None), 0.0)
    kids.children.promote(Promote(3, "web", 5))
    said = kids.children.promoted(3, {"generation": 5, "pid": 999_999_999}, [os.dup(a.fileno())])
    assert said["error"] == "the template it forked (pid 999999999) exited at once"
    for s in (a, b, s1, s2):
        s.close()


def _template_link_type() -> type:
    from prefork.master._templates import TemplateLink

    return TemplateLink


def test_a_worker_reaped_is_no_longer_asked(kids: Kids, child: int) -> None:
    kids.children.promote(Promote(3, "web", 2))
    kids.children.adopt({3: child})
    kids.children.reaped(Reaped(child, 0, None))
    said = kids.children.promoted(3, {"generation": 2, "pid": child}, [])
    assert "not asked" in said["error"]


# --- the worker's side ----------------------------------------------------------------------


class Transport:
    def __init__(self) -> None:
        self.written = bytearray()

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.written += data


def worker_link(channel: socket.socket | None = None) -> _child._Link:
    spec = None
    if channel is not None:
        spec = _child.WorkerSpec("web", "x:y", 1, 1, channel, [])
    link = _child._Link(1 << 20, spec)
    link.transport = Transport()  # type: ignore[assignment]
    link.worker = Worker(type="web", id=1, generation=1, sockets=[], options={}, channel=link)
    return link


def written(link: _child._Link) -> list[frames.Message]:
    return frames.Decoder().feed(bytes(link.transport.written))  # type: ignore[union-attr]


def test_a_worker_of_a_broker_that_does_not_refork_says_so() -> None:
    async def main() -> list[frames.Message]:
        link = worker_link()
        link.promote("odd")  # not what the master sends: nothing
        link.promote({"generation": 2})
        await asyncio.sleep(0)
        return written(link)

    said = asyncio.run(main())
    error = {"generation": 2, "error": "not a template broker"}
    assert said == [frames.Message(frames.PROMOTED, error)]


def test_the_answer_passes_the_link_on_the_channel_itself() -> None:
    ours, theirs_end = socket.socketpair()
    a, b = seqpacket()
    link = worker_link(theirs_end)
    asyncio.run(_child._answer(link, {"generation": 2, "pid": 9}, a))
    data, fds, _, _ = socket.recv_fds(ours, 1000, 1)
    assert frames.Decoder().feed(data) == [
        frames.Message(frames.PROMOTED, {"generation": 2, "pid": 9})
    ]
    assert len(fds) == 1 and a.fileno() == -1
    for fd in fds:
        os.close(fd)
    for s in (ours, theirs_end, b):
        s.close()


def test_a_full_channel_answers_without_the_link() -> None:
    ours, theirs_end = socket.socketpair()
    theirs_end.setblocking(False)
    try:
        while True:
            theirs_end.send(b"x" * 65536)
    except BlockingIOError:
        pass
    a, b = seqpacket()
    link = worker_link(theirs_end)
    asyncio.run(_child._answer(link, {"generation": 2, "pid": 9}, a))
    assert written(link) == [
        frames.Message(frames.PROMOTED, {"generation": 2, "error": "channel full"})
    ]
    b.setblocking(False)
    assert b.recv(10) == b""  # the template's link is closed: it leaves
    for s in (ours, theirs_end, b):
        s.close()


class Raises(Worker):
    @classmethod
    def before_fork(cls, options: Any) -> None:
        raise RuntimeError("no")


def test_a_worker_with_threads_or_a_before_fork_that_raises_forks_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = _child.WorkerSpec("web", "x:y", 1, 1, socket.socket(), [])
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        said, link = _promote.fork_template(spec, Worker, 2)
    finally:
        stop.set()
        thread.join()
    assert link is None and said["error"].startswith("not fork safe: ")
    # This test process may hold threads of other tests (pytest-xdist runs them in any
    # order): here it is a worker with none.
    monkeypatch.setattr(_promote.threading, "active_count", lambda: 1)
    said, link = _promote.fork_template(spec, Raises, 2)
    assert (said, link) == ({"generation": 2, "error": "RuntimeError: no"}, None)
    spec.channel.close()


def test_a_promoted_template_gives_back_every_socket_but_the_kept(tmp_path: Path) -> None:
    kept, given = socket.socketpair()
    path = tmp_path / "f"
    f = os.open(path, os.O_CREAT | os.O_RDWR)
    fd_dir = tmp_path / "fd"
    fd_dir.mkdir()
    spare = os.open(os.devnull, os.O_RDONLY)
    os.close(spare)  # a number not open: skipped
    for fd in (kept.fileno(), given.fileno(), f, spare):
        (fd_dir / str(fd)).touch()
    _promote.give_back([kept.fileno()], str(fd_dir))
    assert os.readlink(f"/proc/self/fd/{given.fileno()}") == os.devnull
    assert os.readlink(f"/proc/self/fd/{f}") == str(path)
    assert os.readlink(f"/proc/self/fd/{kept.fileno()}").startswith("socket:")
    kept.close()
    given.close()
    os.close(f)

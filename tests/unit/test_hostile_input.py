"""Hostile bytes on every side channel of the master at once, in one process: the control
socket, the metrics endpoint and a worker's channel, each fed through the master's own
dispatch with a real selector. Whatever arrives, split however, nothing raises out of the
dispatch, every buffer stays inside its bound, and afterwards the master still answers a
status request and a scrape. (The same against a real master: tests/process/.)"""

from __future__ import annotations

import json
import selectors
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_console import FakeMaster, host

from prefork import Master
from prefork.config import MasterConfig
from prefork.core import _frames as frames
from prefork.core._events import ChannelBroken, Event, MessageReceived
from prefork.master._channels import READ_CHUNK, Channels
from prefork.ops._console import Console
from prefork.ops._control import ControlServer
from prefork.ops._metrics_http import MetricsEndpoint

MAX_FRAME = 1 << 16


def nested(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * depth + close * depth


json_texts = st.one_of(
    st.integers(1, 3000).map(nested),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(1, 6000).map(lambda n: b"9" * n),
    st.just(b'{"v":1,"cmd":"status"}'),
    st.just(b'{"v":1,"cmd":"scale","broker":"http","workers":' + b"9" * 5000 + b"}"),
    st.builds(
        lambda x: json.dumps(x).encode(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
            max_leaves=10,
        ),
    ),
    st.binary(max_size=300),
)


@st.composite
def control_input(draw: st.DrawFn) -> bytes:
    return draw(json_texts) + draw(st.sampled_from([b"\n", b"", b"\r\n"]))


@st.composite
def metrics_input(draw: st.DrawFn) -> bytes:
    head = draw(
        st.sampled_from(
            [b"GET /metrics HTTP/1.1", b"GET / HTTP/1.0", b"HEAD /metrics HTTP/1.1", b"BREW"]
        )
        | st.binary(max_size=200)
    )
    return head + draw(st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n", b""]))


@st.composite
def channel_input(draw: st.DrawFn) -> bytes:
    payload = draw(
        st.one_of(
            json_texts.map(lambda body: b'{"k":"report","b":{"metrics":' + body + b"}}"),
            json_texts.map(lambda body: b'{"k":"msg","b":' + body + b"}"),
            json_texts,
        )
    )
    claimed = draw(st.sampled_from([len(payload), len(payload), 1 << 30, 0]))
    return claimed.to_bytes(4, "big") + payload


inputs = st.lists(
    st.one_of(
        st.tuples(st.just("control"), control_input(), st.integers(1, 512)),
        st.tuples(st.just("metrics"), metrics_input(), st.integers(1, 512)),
        st.tuples(st.just("channel"), channel_input(), st.integers(1, 512)),
    ),
    max_size=12,
)


@dataclass
class Rig:
    """A console and a channel on one selector, driven by a ``Master``'s dispatch."""

    selector: selectors.BaseSelector
    console: Console
    channels: Channels
    worker_end: socket.socket
    posted: list[Event] = field(default_factory=list)
    clients: dict[str, socket.socket] = field(default_factory=dict)
    dispatcher: Master = field(default_factory=Master)

    def pump(self, rounds: int = 8) -> None:
        for _ in range(rounds):
            ready = self.selector.select(0)
            if not ready:
                return
            self.dispatcher._dispatch(ready, self.channels)
        self.console.settle()

    def servers(self) -> tuple[ControlServer, MetricsEndpoint]:
        control, endpoint = self.console._control, self.console._endpoint
        assert control is not None and endpoint is not None
        return control, endpoint

    def client(self, target: str) -> socket.socket:
        """The open connection to ``target`` (a new one when the last was closed)."""
        sock = self.clients.get(target)
        if sock is None:
            control, endpoint = self.servers()
            if target == "control":
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(control.path)
            else:
                sock = socket.create_connection(endpoint.listener.getsockname())
            sock.setblocking(False)
            self.clients[target] = sock
        return sock

    def send(self, target: str, data: bytes, step: int) -> None:
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            try:
                if target == "channel":
                    self.worker_end.send(piece)
                else:
                    self.client(target).send(piece)
            except OSError:  # closed by the master, or its buffer full
                if target != "channel":  # a new client next
                    self.clients.pop(target).close()
            self.pump()
            self.check_bounds()

    def check_bounds(self) -> None:
        for server in self.servers():
            assert len(server.peers) <= server.MAX_PEERS
            for peer in server.peers.values():
                assert len(peer.input) <= server.MAX_INPUT + 65536
                assert len(peer.output) <= ControlServer.MAX_OUTPUT + server.LOW_WATER + (1 << 17)
        for channel in self.channels._by_worker.values():
            assert len(channel.decoder._buffer) <= MAX_FRAME + frames.HEADER.size + READ_CHUNK


@contextmanager
def rig() -> Iterator[Rig]:
    with tempfile.TemporaryDirectory() as tmp, selectors.DefaultSelector() as selector:
        posted: list[Event] = []
        config = MasterConfig(control=str(Path(tmp) / "m.ctl"), metrics_bind="127.0.0.1:0")
        made = Console(config, posted.append, host())
        made.open(selector, FakeMaster().status, {})
        channels = Channels(selector, posted.append, MAX_FRAME)
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        channels.add(1, ours)
        built = Rig(selector, made, channels, theirs, posted)
        try:
            yield built
        finally:
            for sock in built.clients.values():
                sock.close()
            made.close()
            channels.close_all()
            theirs.close()


def answered(built: Rig, target: str, request: bytes) -> bytes:
    sock = built.client(target)
    sock.send(request)
    data = b""
    for _ in range(200):
        built.pump()
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        if not chunk:
            break
        data += chunk
        if target == "control" and data.endswith(b"\n"):
            break
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=inputs)
def test_hostile_bytes_on_every_side_channel_at_once(steps: list[tuple[str, bytes, int]]) -> None:
    with rig() as built:
        for target, data, step in steps:
            built.send(target, data, step)
        # The channel gave only events the supervisor knows, and nothing after a broken frame.
        kinds = [type(e) for e in built.posted]
        assert set(kinds) <= {MessageReceived, ChannelBroken}
        assert ChannelBroken not in kinds[:-1]
        # And the master still answers: a new client of each side server gets through.
        for target in ("control", "metrics"):
            old = built.clients.pop(target, None)
            if old is not None:
                old.close()
        status = answered(built, "control", b'{"v":1,"cmd":"status"}\n')
        assert json.loads(status)["ok"] is True
        scrape = answered(built, "metrics", b"GET /metrics HTTP/1.1\r\n\r\n")
        assert scrape.startswith(b"HTTP/1.1 200 OK") and scrape.endswith(b"0\r\n\r\n")


def test_the_rig_sees_what_a_worker_sends() -> None:
    """The fuzz above would pass if the channel never delivered anything."""
    with rig() as built:
        built.send("channel", frames.encode(frames.MESSAGE, {"a": [1]}), 3)
        assert built.posted == [MessageReceived(1, "msg", {"a": [1]})]
        built.send("channel", frames.HEADER.pack(5) + nested(2) + b"x", 1)
        assert isinstance(built.posted[-1], ChannelBroken)

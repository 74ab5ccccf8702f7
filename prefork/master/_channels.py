"""The master's ends of the worker channels: reads turned into events, buffered writes.

Each worker has one socketpair. Reads are bounded per loop turn, so a worker that floods the
master cannot starve the others or the signal fd; a frame the decoder refuses stops reading
from that worker and reports it (the supervisor then replaces the worker).

One frame may come with an fd (SCM_RIGHTS): a worker's PROMOTED frame brings the link of the
template it forked (``--refork-after``). Reads take fds (``recv_fds``, one at most: the kernel
closes any more), so every PROMOTED frame is handed to ``promoted`` with the fds its read
brought (the kernel ends a read at a message with fds: they belong to the last frame of it),
which keeps the link or closes it and gives the body the supervisor hears; fds that came with
anything else are closed.
"""

from __future__ import annotations

import os
import selectors
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prefork.core import _frames as frames
from prefork.core._events import ChannelBroken, Event, MessageReceived

READ_CHUNK = 65536
READS_PER_TURN = 4


class Channel:
    """The master's end of one worker's socketpair."""

    def __init__(self, worker_id: int, sock: socket.socket, max_frame: int) -> None:
        self.worker_id = worker_id
        self.sock = sock
        self.decoder = frames.Decoder(max_frame, frames.TO_MASTER)
        self.outgoing = bytearray()


class Channels:
    """Every live worker's channel, registered with the master's selector (``data`` is the
    ``Channel``). What arrives is handed to ``post`` as supervisor events."""

    def __init__(
        self,
        selector: selectors.BaseSelector,
        post: Callable[[Event], None],
        max_frame: int,
        promoted: Callable[[int, Any, list[int]], Any] | None = None,
    ) -> None:
        self._selector = selector
        self._post = post
        self._max_frame = max_frame
        self._by_worker: dict[int, Channel] = {}
        # (worker id, body, fds) -> the body to post; None: every fd is closed, bodies kept.
        self._promoted = promoted

    def add(self, worker_id: int, sock: socket.socket) -> None:
        sock.setblocking(False)
        channel = Channel(worker_id, sock, self._max_frame)
        self._by_worker[worker_id] = channel
        self._selector.register(sock, selectors.EVENT_READ, channel)

    def export(self, carry: Callable[[socket.socket], int]) -> list[dict[str, Any]]:
        """Every channel as plain data for the next image of the master (``prefork ctl
        upgrade``): its socket (``carry`` keeps it open across the exec and gives its number),
        the bytes of a frame half read, those not sent yet, and whether it is still read."""
        return [
            {
                "worker": c.worker_id,
                "fd": carry(c.sock),
                "pending": c.decoder.pending.hex(),
                "outgoing": c.outgoing.hex(),
                "open": self._registered(c),
            }
            for c in self._by_worker.values()
        ]

    def adopt(self, doc: Mapping[str, Any]) -> None:
        """Take one channel ``export`` gave; raises ``ValueError``, ``KeyError`` or
        ``OSError`` (no such socket) if it does not fit."""
        sock = socket.socket(fileno=int(doc["fd"]))
        sock.set_inheritable(False)
        worker_id = int(doc["worker"])
        self.add(worker_id, sock)
        channel = self._by_worker[worker_id]
        channel.decoder.feed(bytes.fromhex(doc["pending"]))
        channel.outgoing += bytes.fromhex(doc["outgoing"])
        if not doc["open"]:
            self._stop_reading(channel)
        elif channel.outgoing:
            self.flush(channel)

    def fds(self) -> list[int]:
        """Every channel's fd (a newly forked worker closes the others')."""
        return [c.sock.fileno() for c in self._by_worker.values()]

    def remove(self, worker_id: int) -> None:
        """A worker was reaped: take in its last frames (they came before its exit), close."""
        channel = self._by_worker.pop(worker_id)
        self.read(channel, drain=True)
        self._stop_reading(channel)
        channel.sock.close()

    def close_all(self) -> None:
        for channel in self._by_worker.values():
            channel.sock.close()
        self._by_worker.clear()

    def read(self, channel: Channel, *, drain: bool = False) -> None:
        if channel.sock.fileno() < 0:
            return
        for _ in range(READS_PER_TURN if not drain else 1 << 30):
            try:
                data, fds, _flags, _addr = socket.recv_fds(channel.sock, READ_CHUNK, 1)
            except (BlockingIOError, ConnectionResetError):
                return
            if not data:
                self._stop_reading(channel)
                return
            try:
                messages = channel.decoder.feed(data)
            except frames.FrameError as exc:
                _close(fds)
                self._stop_reading(channel)
                self._post(ChannelBroken(channel.worker_id, str(exc)))
                return
            last = max((i for i, m in enumerate(messages) if m.kind == frames.PROMOTED), default=-1)
            if last < 0:
                _close(fds)
            for i, m in enumerate(messages):
                body = m.body
                if m.kind == frames.PROMOTED:
                    passed, fds = (fds, []) if i == last else ([], fds)
                    if self._promoted is None:
                        _close(passed)
                    else:
                        body = self._promoted(channel.worker_id, body, passed)
                self._post(MessageReceived(channel.worker_id, m.kind, body))

    def open(self, worker_id: int) -> bool:
        """Whether frames can still be sent to this worker."""
        channel = self._by_worker.get(worker_id)
        return channel is not None and self._registered(channel)

    def send(self, worker_ids: Iterable[int], frame: bytes) -> None:
        """Queue ``frame`` for each of these workers and write what the sockets take now."""
        for worker_id in worker_ids:
            channel = self._by_worker.get(worker_id)
            if channel is not None and self._registered(channel):
                channel.outgoing += frame
                self.flush(channel)

    def flush(self, channel: Channel) -> None:
        try:
            sent = channel.sock.send(channel.outgoing)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._stop_reading(channel)
            return
        del channel.outgoing[:sent]
        mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if channel.outgoing else 0)
        self._selector.modify(channel.sock, mask, channel)

    def _registered(self, channel: Channel) -> bool:
        return channel.sock.fileno() >= 0 and channel.sock in self._selector.get_map()

    def _stop_reading(self, channel: Channel) -> None:
        if self._registered(channel):
            self._selector.unregister(channel.sock)
        channel.outgoing.clear()


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)

"""The Worker base class: what a worker type subclasses.

A worker runs in its own forked process on a uvloop event loop. The master starts it, calls
``init()``, and treats it as ready when ``init()`` returns (or, with ``auto_ready = False``,
when it calls ``ready()``). The master's STOP frame (or a SIGTERM) runs
``prepare_for_shutdown()``, which must end with ``shutdown()``.
"""

from __future__ import annotations

import asyncio
import mmap
import socket
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar, Protocol

from prefork.core import _frames


class Channel(Protocol):
    """The worker's end of its link to the master."""

    def send_frame(self, kind: str, body: Any = None) -> None: ...


class Board:
    """A few integers shared by the workers of one broker and their master: one slot per
    worker, which that worker writes and every worker reads (the HTTP worker shares how many
    connections it holds, to spread them evenly).

    Memory the master maps before it forks (``MAP_SHARED | MAP_ANONYMOUS``), so a read or a
    write is a memory access, not a system call; a slot is one aligned 8-byte word, written
    whole. A slot holds its value + 1, and 0 while no worker uses it: a worker clears its own
    when it stops taking part, the master clears a reaped worker's (one killed with -9 leaves
    no stale value). A worker's slot is its id modulo ``SLOTS``: two live workers whose ids
    are ``SLOTS`` apart share one (rare; their values then mix, nothing else breaks).
    """

    SLOTS = 64

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, self.SLOTS * 8)
        self._words = memoryview(self._map).cast("q")

    def slot_of(self, worker_id: int) -> int:
        return worker_id % self.SLOTS

    def set(self, slot: int, value: int) -> None:
        """Store ``value`` (>= 0) in ``slot``."""
        self._words[slot] = value + 1

    def clear(self, slot: int) -> None:
        self._words[slot] = 0

    def values(self) -> list[int]:
        """The values of the slots in use."""
        return [word - 1 for word in self._words.tolist() if word]

    def fewest(self, besides: int = -1) -> int:
        """The smallest value of a slot in use other than slot ``besides`` (-1 if none is)."""
        words = self._words.tolist()
        if besides >= 0:
            words[besides] = 0
        return min(filter(None, words), default=0) - 1


class Worker:
    """Base class for a worker type.

    Attributes set before ``init()`` runs: ``type`` (the broker's name), ``id`` (unique in this
    master), ``generation`` (bumped by every reload), ``sockets`` (the broker's listening
    sockets, inherited from the master), ``backlog`` (the listen queue length the master gave
    them), ``graceful_timeout`` (how long ``prepare_for_shutdown`` may take before the
    master's SIGKILL), ``timeout`` (the broker's ``--timeout``: how long the worker may be
    silent; 0 when off or not known), ``options`` (the broker's extra keyword options) and
    ``board`` (a ``Board`` shared with the broker's other workers, or None) with ``slot``,
    this worker's.
    """

    #: When True the worker counts as ready as soon as ``init()`` returns. Set it to False and
    #: call ``ready()`` yourself when readiness comes later.
    auto_ready: ClassVar[bool] = True

    #: What the master writes to a connection it turns away while the broker is drained
    #: (empty: the connection is reset). The HTTP worker sends a 503.
    drained_reply: ClassVar[bytes] = b""

    #: For the master's first log line: its TCP addresses are shown as URLs of this scheme.
    url_scheme: ClassVar[str] = ""

    def __init__(
        self,
        *,
        type: str,
        id: int,
        generation: int,
        sockets: list[socket.socket],
        options: Mapping[str, Any],
        channel: Channel,
        backlog: int = 0,
        graceful_timeout: float = 0.0,
        timeout: float = 0.0,
        board: Board | None = None,
    ) -> None:
        self.type = type
        self.id = id
        self.generation = generation
        self.sockets = sockets
        # asyncio's and uvloop's create_server() call listen() on a socket they are given; a
        # server built on them passes this, so the master's setting stays the only one.
        self.backlog = backlog
        # The seconds between SIGTERM and the master's SIGKILL (0: not known).
        self.graceful_timeout = graceful_timeout
        self.timeout = timeout
        self.options = dict(options)
        self.board = board
        self.slot = board.slot_of(id) if board is not None else 0
        # Set before prepare_for_shutdown() runs: True when a new worker takes this one's place
        # (a reload, a recycle), False for a drain, a stop or a scale-down.
        self.replaced = False
        self._channel = channel
        self._exit: asyncio.Future[int] | None = None
        self._ready_sent = False

    @classmethod
    def url_scheme_for(cls, options: Mapping[str, Any]) -> str:
        """The ``url_scheme`` of a broker with these options (TLS may make it ``https``)."""
        return cls.url_scheme

    @classmethod
    def title_for(cls, options: Mapping[str, Any]) -> str:
        """What the master's process title names for a broker with these options
        (``prefork: master [TITLE]``; empty: the broker's name and count)."""
        return ""

    @classmethod
    def drained_reply_for(cls, options: Mapping[str, Any]) -> bytes:
        """The ``drained_reply`` of a broker with these options."""
        return cls.drained_reply

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise ``ConfigError`` if this worker type cannot run with ``options`` (the broker's
        extra keyword options). Called by ``Master.broker`` before anything forks; the default
        accepts anything."""

    @classmethod
    def prepare_template(cls, options: Mapping[str, Any]) -> None:
        """With templates (``template=True``, ``--template``): runs in the template process
        once this class is imported, to import what its workers use so that they share it
        (the HTTP worker imports the app's module). Must not start threads or open
        connections: they would not survive the fork (see ``before_fork``). An exception
        fails the template (and a reload onto it). The default does nothing."""

    @classmethod
    def before_fork(cls, options: Mapping[str, Any]) -> None:
        """With templates: runs in the template before each worker is forked from it, and
        (``refork_after``) in a warmed worker before it forks the next template from itself.
        Close what must not be shared across the fork (a database connection opened at
        import, a file held for writing). An exception fails that worker's start (or that
        refork)."""

    @classmethod
    def after_fork(cls, options: Mapping[str, Any]) -> None:
        """With templates: runs in each new worker right after the fork, before the worker
        is made and ``init()`` runs (reseed what the template's state would make every
        worker repeat). An exception fails the worker's start."""

    def init(self) -> Awaitable[None] | None:
        """Start the worker's work. May be ``async``. An exception here is a boot failure."""
        return None

    async def prepare_for_shutdown(self) -> None:
        """Stop gracefully; runs when the master stops this worker (``replaced`` says
        whether another takes its place) or on SIGTERM. Must end by calling ``shutdown()``."""
        self.shutdown()

    def on_message(self, obj: Any) -> None:
        """Receive an object the master sent with ``broker.send(obj)``."""

    def shutdown(self, code: int = 0) -> None:
        """End the worker: its process exits with ``code`` once the current callback returns."""
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(code)

    def ready(self) -> None:
        """Tell the master this worker is ready (once; later calls do nothing)."""
        if not self._ready_sent:
            self._ready_sent = True
            self._channel.send_frame(_frames.READY)

    def send(self, obj: Any) -> None:
        """Send a JSON-serialisable object to the master (``worker_message`` event).

        Raises ``TypeError`` if it is not JSON-serialisable and ``FrameError`` if it is too big.
        """
        self._channel.send_frame(_frames.MESSAGE, obj)

    def report(self, obj: Any) -> None:
        """Send operational data to the master (``worker_report`` event)."""
        self._channel.send_frame(_frames.REPORT, obj)

    def retire(self) -> None:
        """Ask to be replaced through the rolling path: a replacement starts first, then this
        worker gets SIGTERM. Used for recycling after N requests."""
        self._channel.send_frame(_frames.RETIRE)

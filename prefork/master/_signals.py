"""Signals to the master: handlers that only let the wake-up byte through.

``signal.set_wakeup_fd`` writes each signal's number to a non-blocking socketpair at C level;
the master's select loop reads it and acts there, outside any handler. Repeated signals simply
arrive as repeated bytes, and nothing runs inside a handler that could interrupt the loop
half-way through a change. Alternatives rejected: signalfd (Linux-only and it needs the signals
blocked in every thread, including in forked children until they unblock them) and a handler
that appends to a queue (a handler can run between any two bytecodes of the loop).
"""

from __future__ import annotations

import enum
import signal
import socket
from collections.abc import Mapping
from types import FrameType, TracebackType
from typing import Literal, assert_never

from prefork.core._events import (
    DrainRequested,
    Event,
    ReloadRequested,
    ResumeRequested,
    ScaleRequested,
    StopRequested,
)


class Intent(enum.Enum):
    RELOAD = "reload"
    DRAIN = "drain"
    RESUME = "resume"
    STOP = "stop"
    TERMINATE = "terminate"  # SIGTERM as a stop: after the shutdown delay
    SCALE_UP = "scale up"
    SCALE_DOWN = "scale down"
    REOPEN_LOGS = "reopen logs"
    CHILD = "child exited"


INTENTS: dict[int, Intent] = {
    signal.SIGHUP: Intent.RELOAD,
    signal.SIGTERM: Intent.DRAIN,
    signal.SIGUSR2: Intent.RESUME,
    signal.SIGINT: Intent.STOP,
    signal.SIGQUIT: Intent.STOP,
    signal.SIGTTIN: Intent.SCALE_UP,
    signal.SIGTTOU: Intent.SCALE_DOWN,
    signal.SIGUSR1: Intent.REOPEN_LOGS,
    signal.SIGCHLD: Intent.CHILD,
}


def sigterm_intent(setting: str, pid: int, environ: Mapping[str, str]) -> tuple[Intent, str]:
    """What SIGTERM means for ``--sigterm setting``, and why (for the first log line).

    ``auto`` stops where a process manager sends SIGTERM to end the service and SIGKILLs it
    after a grace period: as PID 1 (a container: ``docker stop``, a pod's rollout) and under
    systemd (``INVOCATION_ID`` is set for every unit). On a host it drains and the master
    stays (the design's meaning: SIGUSR2 resumes).
    """
    if setting == "stop":
        return Intent.TERMINATE, "SIGTERM stops (--sigterm stop)"
    if setting == "drain":
        return Intent.DRAIN, "SIGTERM drains (--sigterm drain)"
    if pid == 1:
        return Intent.TERMINATE, "SIGTERM stops (the master is PID 1: --sigterm auto)"
    if environ.get("INVOCATION_ID"):
        return Intent.TERMINATE, "SIGTERM stops (under systemd: --sigterm auto)"
    return Intent.DRAIN, "SIGTERM drains, the master stays (on a host: --sigterm auto)"


def _let_through(signum: int, frame: FrameType | None) -> None:
    """The wake-up fd already carries the signal; nothing to do here."""


class SignalWakeup:
    """Context manager: while active, each signal in ``INTENTS`` arrives as a byte on
    ``fileno()``; on exit the previous handlers and wake-up fd are restored."""

    def __init__(self, *, sigterm: Intent = Intent.DRAIN) -> None:
        # SIGTERM drains by default; process managers that stop services with SIGTERM
        # (systemd, Docker, Kubernetes) can have it stop the master instead.
        self._intents = {**INTENTS, signal.SIGTERM: sigterm}
        self._reader, self._writer = socket.socketpair()
        self._old: dict[int, object] = {}
        self._old_fd = -1

    def fileno(self) -> int:
        return self._reader.fileno()

    def fds(self) -> list[int]:
        """Every fd this object holds (a forked worker closes them)."""
        return [self._reader.fileno(), self._writer.fileno()]

    def __enter__(self) -> SignalWakeup:
        for end in (self._reader, self._writer):
            end.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in INTENTS:
            self._old[signum] = signal.signal(signum, _let_through)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._old.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._old_fd)
        self._reader.close()
        self._writer.close()

    def read(self) -> list[Intent]:
        """The intents of every signal received since the last call, in order."""
        return [self._intents[n] for n in self.waiting() if n in self._intents]

    def waiting(self) -> list[int]:
        """The numbers of every signal received since the last call, in order (taken off
        the fd: an in-place upgrade raises them again across its exec)."""
        received = bytearray()
        while True:
            try:
                chunk = self._reader.recv(4096)
            except BlockingIOError:
                break
            received += chunk
        return list(received)


#: Signals a worker leaves to its master. Ctrl-C (and Ctrl-\) in a terminal reach the whole
#: foreground process group, workers included; the master turns them into a graceful drain, so
#: a worker must not die of them on its own. A no-op handler, not SIG_IGN: caught signals go
#: back to their default in a program the worker execs, ignored ones would stay ignored.
LEFT_TO_MASTER = (signal.SIGINT, signal.SIGQUIT)


def reset_in_child() -> None:
    """In a forked worker: default handlers (none for the stop signals, which are the master's
    business) and no wake-up fd (the master's is not ours)."""
    signal.set_wakeup_fd(-1)
    for signum in INTENTS:
        handler = _let_through if signum in LEFT_TO_MASTER else signal.SIG_DFL
        signal.signal(signum, handler)


#: The intents the supervisor decides on; the loop handles CHILD and REOPEN_LOGS itself.
Command = Literal[
    Intent.RELOAD,
    Intent.DRAIN,
    Intent.RESUME,
    Intent.STOP,
    Intent.TERMINATE,
    Intent.SCALE_UP,
    Intent.SCALE_DOWN,
]


def intent_event(intent: Command) -> Event:
    """The supervisor event for a command intent."""
    match intent:
        case Intent.RELOAD:
            return ReloadRequested()
        case Intent.DRAIN:
            return DrainRequested()
        case Intent.RESUME:
            return ResumeRequested()
        case Intent.STOP:
            return StopRequested()
        case Intent.TERMINATE:
            return StopRequested(delayed=True)
        case Intent.SCALE_UP:
            return ScaleRequested(delta=1)
        case Intent.SCALE_DOWN:
            return ScaleRequested(delta=-1)
        case _:
            assert_never(intent)

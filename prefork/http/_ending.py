"""How an HTTP connection moves through its phases and how it ends: refusals, aborts, closes,
timeouts and drains. ``ConnectionEnd`` is a part of ``HTTPProtocol`` (``_connection``), which
owns the attributes declared here.

Timeouts are deadlines checked by the server's sweep, so arming one costs a float store, not a
timer handle per request. Each ``Phase`` arms its own timeout (``_enter``, from the table in
``_state``); ``write_deadline`` bounds how long a client may leave our writes paused (then the
connection is aborted, its buffer dropped).
"""

from __future__ import annotations

import asyncio

from prefork.http._access import log_refusal
from prefork.http._asgi import Cycle
from prefork.http._flow import FlowControl
from prefork.http._framing import simple_response
from prefork.http._parse import RequestReader
from prefork.http._state import Phase, ServerState
from prefork.http._stats import Stats

# Module globals: compared by identity, faster than ``Phase.X`` lookups.
IDLE, HEAD, CLOSED = Phase.IDLE, Phase.HEAD, Phase.CLOSED

#: What ``abort_cycle`` answers.
_ABORTED = {500: b"Internal Server Error\n", 504: b"Gateway Timeout\n"}


class ConnectionEnd:
    """A connection's phase and deadlines, and how it ends (module docstring)."""

    state: ServerState
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    flow: FlowControl
    client: tuple[str, int] | None
    cycle: Cycle | None
    phase: Phase
    deadline: float
    write_deadline: float
    draining: bool
    _reader: RequestReader
    _stats: Stats
    _timeouts: tuple[float, ...]

    def _enter(self, phase: Phase) -> None:
        """Enter (or stay in) ``phase``: its timeout (``PHASE_TIMEOUTS``) counts from now."""
        self.phase = phase
        timeout = self._timeouts[phase]
        self.deadline = self.loop.time() + timeout if timeout else 0.0

    def abort_cycle(self, cycle: Cycle, status: int = 500) -> None:
        """The app failed or left ``cycle`` unfinished: answer ``status`` (500, or 504 for a
        WSGI thread past ``--timeout``) if we can, and close."""
        if cycle is self.cycle and self.phase is not CLOSED:
            if cycle.disconnected or self.transport.is_closing():
                self._close()  # the client left (the app was told): nobody to answer
            else:
                self._refuse(status, _ABORTED[status])

    def _refuse(self, status: int, message: bytes, headers: bytes = b"") -> None:
        """Answer ``status`` (unless a response has begun) and close.

        The answer to a HEAD request has no body (RFC 9110 section 9.3.2), whether the head
        was parsed or only begins with ``HEAD``. It counts as the request's response once the
        app has started (a 500 for a failed app, a 400 for a bad body), else as a refusal.
        Any status but a 500 (the app's failure, logged as such) is logged at DEBUG.
        """
        if status != 500:
            log_refusal(self.client, status, message)
        cycle = self.cycle
        stats = self._stats
        if cycle is None:
            head = self._reader.buf[:5] == b"HEAD "
            response = simple_response(status, message, head_request=head, extra=headers)
            self.transport.write(response)
            stats.sent += len(response)
            stats.refused(status)
        elif cycle.framing is None:
            response = simple_response(status, message, head_request=cycle.head_request)
            self.transport.write(response)
            stats.sent += len(response)
            if cycle.started:
                taken = self.state.clock() - cycle.started
                stats.responded(cycle.scope.get("method", ""), status, taken)
            else:  # refused while reading the body that came with the head
                stats.refused(status)
        self.state.linger(self.transport)
        self._close()

    def _close(self, abort: bool = False) -> None:
        """Close (``abort``: at once, dropping what the client has not read yet)."""
        self.phase = CLOSED  # _enter(CLOSED) inline: no timeout (once per connection)
        self.deadline = 0.0
        if self.cycle is not None:
            self.cycle.disconnect()
        if abort:
            self.write_deadline = 0.0
        self.flow.end(abort)  # a close flushes first: write_deadline still bounds that

    # -- timeouts and drain --------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """Close the connection if its current deadline has passed."""
        if self.write_deadline and now >= self.write_deadline:
            self._close(abort=True)  # the client stopped reading our response
        elif self.deadline and now >= self.deadline:
            phase = self.phase
            if (phase is IDLE or phase is HEAD) and self._reader.buf:
                self._refuse(408, b"Request timeout.\n")
            else:
                self._close()

    def start_drain(self, until: float = float("inf")) -> None:
        """Answer the request in flight with ``Connection: close``, then close.

        An idle keep-alive connection stays open until its keep-alive deadline (or ``until``,
        the worker's last moment to wait, whichever comes first): a request it brings
        meanwhile (the client may have sent it already) is answered with ``Connection:
        close``, so a drain costs no request that keep-alive expiry would not cost anyway. A
        connection waiting for a head gets at most ``keep_alive`` more, and no later.
        """
        self.draining = True
        if self.cycle is not None:
            self.cycle.close_after_response()
        elif self.phase is HEAD or self.phase is IDLE:
            self.deadline = min(self.deadline, self.loop.time() + self._timeouts[IDLE], until)

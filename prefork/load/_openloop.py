"""wrk2's open loop of ``prefork load --rate``: send k leaves when its schedule says it is due,
on any idle connection, its latency measured from when it was *meant* to leave (so a server
that stalls cannot slow the client down and hide its stall); one microsecond timer
(``_timer``) wakes for the next send. The connections, their warm-up, timeouts and end are
``_client._Run``'s.
"""

from __future__ import annotations

import asyncio
import math
import time

from prefork.load._client import LATE_NS, Recorder, Schedule, _Conn, _Run
from prefork.load._target import Target
from prefork.load._timer import PreciseTimer


class _OpenRun(_Run):
    def __init__(
        self,
        target: Target,
        connections: int,
        schedule: Schedule,
        deadline: float,
        tally: Recorder,
        timeout: float,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        super().__init__(target, connections, deadline, tally, timeout, loop)
        self.schedule = schedule
        self.waiting: list[_Conn] = []  # idle connections
        self.sent = 0  # sends so far: the index of the next one
        self._timer = PreciseTimer(self.loop, self._wake)
        self._armed = False

    def idle(self, conn: _Conn, now_ns: int) -> None:
        self.waiting.append(conn)
        self.pump(now_ns)

    def pump(self, now_ns: int) -> None:
        """Send what is due on idle connections; if nothing more is, wake when it will be."""
        if now_ns >= self.deadline_ns or self.stopping or self.holding:
            return
        schedule = self.schedule
        due = schedule.due(now_ns / 1e9)
        waiting = self.waiting
        tally = self.tally
        while self.sent < due and waiting:
            intended_ns = round(schedule.intended(self.sent) * 1e9)
            if now_ns - intended_ns > LATE_NS:
                tally.late += 1
            waiting.pop().send(intended_ns, now_ns)
            self.sent += 1
        if self.sent >= due and not self._armed:
            # The one timer. One armed earlier wakes for a send that has left since: it finds
            # nothing due and sets itself again, which costs less than moving it each time.
            after = schedule.intended(self.sent)
            if after < math.inf:  # none after a load shape's last send
                self._armed = True
                self._timer.at(round(after * 1e9))
        # Otherwise every connection is busy: the next one to finish sends.

    def closed(self, conn: _Conn) -> None:
        super().closed(conn)
        if conn in self.waiting:  # the server closed an idle connection
            self.waiting.remove(conn)

    def stop(self) -> None:
        self._timer.close()

    def begin(self, shift: float) -> None:
        self.schedule.start += shift
        super().begin(shift)
        self.pump(time.monotonic_ns())

    def end(self, end_ns: int) -> None:
        """As ``_Run.end``, and each send due by the end that never left (no idle connection)
        is unanswered too, and dropped, its latency running from its intended time."""
        super().end(end_ns)
        intended = self.schedule.intended
        for k in range(self.sent, self.schedule.due(end_ns / 1e9 - 1e-9)):
            self.tally.unanswered((end_ns - round(intended(k) * 1e9)) // 1000, sent=False)

    def _wake(self) -> None:
        self._armed = False
        self.pump(time.monotonic_ns())


async def run_open(
    target: Target,
    connections: int,
    rate_schedule: Schedule,
    deadline: float,
    tally: Recorder,
    *,
    timeout: float,
    loop: asyncio.AbstractEventLoop | None = None,
) -> float:
    """Load ``target`` with an open loop (wrk2's) until ``deadline``: send k leaves as soon as
    ``rate_schedule.due(now) > k``, on any idle connection (when all ``connections`` are busy
    it waits for one), and its latency is measured from ``rate_schedule.intended(k)``, not
    from when it could be sent. Failures, the warm-up (which puts the schedule off too) and
    the end as ``run_closed`` (a timeout runs from the actual send; a send due by the end that
    never left is unanswered and dropped); returns the warm-up's length in seconds.
    """
    return await _OpenRun(
        target, connections, rate_schedule, deadline, tally, timeout, loop
    ).serve()

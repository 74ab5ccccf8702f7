"""The closed loop of ``--stages`` without ``--rate`` (k6's ramping-vus): the connections that
send go linearly from 0 through the stages' targets. Every connection a worker may need (its
share of the largest target) is opened in the warm-up, as for ``run_closed``, so set-up stays
its own figure; only the allowed share of them sends, each as wrk's closed loop does. A
connection over the allowed number stops once its request is answered (as k6 lets a VU finish
its iteration), one under it starts within ``TICK``.
"""

from __future__ import annotations

import asyncio
import time

from prefork.load._client import Recorder, _Conn, _Run
from prefork.load._stages import Stages, split_level
from prefork.load._target import Target

#: How often the number of connections allowed to send is looked at (uvloop's timers count
#: milliseconds; a ramp of 10,000 connections in 10 s starts 10 each tick).
TICK = 0.01


class _RampedRun(_Run):
    def __init__(
        self,
        target: Target,
        connections: int,
        stages: Stages,
        parts: int,
        slot: int,
        deadline: float,
        tally: Recorder,
        timeout: float,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        super().__init__(target, connections, deadline, tally, timeout, loop)
        self.stages = stages
        self.parts = parts
        self.slot = slot
        self.start = deadline - stages.length
        self.sending: set[_Conn] = set()
        self._ticker: asyncio.TimerHandle | None = None

    def allowed(self, now_ns: int) -> int:
        """This worker's share of the connections that may send ``now_ns``."""
        return split_level(self.stages.level(now_ns / 1e9 - self.start), self.parts, self.slot)

    def idle(self, conn: _Conn, now_ns: int) -> None:
        if self.holding or now_ns >= self.deadline_ns:
            self.parked.append(conn)
            return
        if conn in self.sending:
            if len(self.sending) > self.allowed(now_ns):  # ramping down: this one stops
                self.sending.discard(conn)
                self.parked.append(conn)
                return
        elif len(self.sending) < self.allowed(now_ns):
            self.sending.add(conn)
        else:
            self.parked.append(conn)
            return
        conn.send(now_ns, now_ns)

    def begin(self, shift: float) -> None:
        self.start += shift
        super().begin(shift)
        self._tick()

    def _tick(self) -> None:
        self.refill(time.monotonic_ns())
        self._ticker = self.loop.call_later(TICK, self._tick)

    def refill(self, now: int) -> None:
        """Start parked connections while fewer than allowed send."""
        allowed = self.allowed(now) if now < self.deadline_ns else 0
        parked = self.parked
        while parked and len(self.sending) < allowed:
            conn = parked.pop()
            if conn in self.live:
                self.sending.add(conn)
                conn.send(now, now)

    def closed(self, conn: _Conn) -> None:
        super().closed(conn)
        self.sending.discard(conn)
        if conn in self.parked:
            self.parked.remove(conn)

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()


async def run_ramped(
    target: Target,
    connections: int,
    stages: Stages,
    deadline: float,
    tally: Recorder,
    *,
    parts: int = 1,
    slot: int = 0,
    timeout: float,
    loop: asyncio.AbstractEventLoop | None = None,
) -> float:
    """``run_closed`` with the connections that send ramped through ``stages`` (from their
    first level, 0 for ``--stages``): worker ``slot`` of ``parts`` sends on its share of
    ``floor(level)`` (``split_level``), ``connections`` being its share of the largest. The
    stages end at ``deadline``. Returns the warm-up's length in seconds."""
    run = _RampedRun(target, connections, stages, parts, slot, deadline, tally, timeout, loop)
    return await run.serve()

"""``run_scenario``: a user's ``await func(client)`` again and again on each of a run's
connections (``_scenario.Client``): a closed loop, an open loop at ``--rate``, or a ramp; the
scenario's own failures counted once. Each request's recording is the ``Client``'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prefork.load._client import _MAX_BACKOFF, _MIN_BACKOFF, LATE_NS, Recorder, Schedule, _LogOnce
from prefork.load._scenario import Client, RequestError
from prefork.load._target import Target

Scenario = Callable[[Client], Awaitable[object]]
#: How often a client a ramp holds back looks again (``_ramp.TICK``).
RAMP_TICK = 0.01


async def run_scenario(
    func: Scenario,
    target: Target,
    connections: int,
    deadline: float,
    tally: Recorder,
    *,
    timeout: float,
    schedule: Schedule | None = None,
    allowed: Callable[[float], int] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> None:
    """Run ``await func(client)`` on ``connections`` clients until ``deadline``: again and
    again on each (a closed loop), or, with a ``schedule``, iteration k starting at
    ``schedule.intended(k)`` on an idle client (an open loop at ``--rate``; its first
    request's latency runs from that intended time, and an iteration due by the end that found
    no idle client is one request unanswered and dropped). With ``allowed`` (a closed loop's
    ramp, ``--stages``), client i runs iterations only while i < ``allowed(now)`` (its
    client over the number finishes the iteration it is in first).

    Each request the scenario makes is recorded by its ``Client``. An exception the scenario
    lets out is an error of kind "timeout" for a ``TimeoutError``, "read" for anything else,
    unless a request of that iteration was counted as failed already (an ``assert`` on a 500
    is one error, not two); logged once per distinct message; the client then pauses a little
    (doubled on each failure in a row, up to a second) in a closed loop. A scenario still
    running at the deadline is cancelled and its request in flight is unanswered. Returns
    once every connection is closed.
    """
    if connections < 1 or not timeout > 0:
        raise ValueError(f"need connections >= 1 and timeout > 0, got {connections}, {timeout}")
    loop = loop or asyncio.get_running_loop()
    clients = [
        Client(target, tally, timeout=timeout, deadline=deadline, loop=loop)
        for _ in range(connections)
    ]
    log = _LogOnce(tally)

    async def once(client: Client) -> bool:
        """One iteration; whether it succeeded."""
        before = client.failures
        try:
            await func(client)
        except RequestError:
            return False
        except Exception as exc:
            if client.failures == before and client.counts(time.monotonic_ns()):
                tally.error("timeout" if isinstance(exc, TimeoutError) else "read")
            log(f"the scenario failed: {type(exc).__name__}: {exc}", exc)
            return False
        return True

    async def repeat(index: int, client: Client) -> None:
        delay = 0.0
        while (now := time.monotonic()) < deadline:
            if allowed is not None and index >= allowed(now):  # a ramp: not this one's turn
                await asyncio.sleep(RAMP_TICK)
                continue
            if await once(client):
                delay = 0.0
                continue
            delay = min(max(2 * delay, _MIN_BACKOFF), _MAX_BACKOFF)
            await asyncio.sleep(delay)

    if schedule is None:
        tasks = [loop.create_task(repeat(i, client)) for i, client in enumerate(clients)]
    else:
        tasks = [loop.create_task(_open_loop(once, clients, schedule, deadline, tally))]
    try:
        await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(client.close() for client in clients))


async def _open_loop(
    once: Callable[[Client], Awaitable[bool]],
    clients: list[Client],
    schedule: Schedule,
    deadline: float,
    tally: Recorder,
) -> None:
    """Start iteration k at ``schedule.intended(k)`` on an idle client (waiting for one when
    all are busy: that start is late) until ``deadline``; at the end (or cancelled), the
    iterations due that never started are unanswered and dropped."""
    idle = list(clients)
    freed = asyncio.Event()
    running: set[asyncio.Task[None]] = set()

    async def iteration(client: Client, intended_ns: int) -> None:
        client.origin_ns = intended_ns
        try:
            await once(client)
        finally:
            client.origin_ns = None
            idle.append(client)
            freed.set()

    k = 0
    try:
        while (when := schedule.intended(k)) < deadline:
            if (wait := when - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            while not idle:
                freed.clear()
                await freed.wait()
            intended_ns = round(when * 1e9)
            if time.monotonic_ns() - intended_ns > LATE_NS:
                tally.late += 1
            task = asyncio.get_running_loop().create_task(iteration(idle.pop(), intended_ns))
            running.add(task)
            task.add_done_callback(running.discard)
            k += 1
        await asyncio.sleep(deadline - time.monotonic())
    finally:
        end_ns = min(time.monotonic_ns(), round(deadline * 1e9))
        for j in range(k, schedule.due(end_ns / 1e9 - 1e-9)):
            tally.unanswered((end_ns - round(schedule.intended(j) * 1e9)) // 1000, sent=False)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

"""``LoadWorker``: one process's share of a ``prefork load`` run.

A ``Worker`` with no socket, started by the master like any other: ``init()`` starts the
driver (closed loop, open loop at ``--rate``, or a user's scenario) on its share of the
connections, and returns; the worker is ready. Every second it ``report()``s what it counted
since the last report (``Tally.report``, deltas, tagged with the second and the time it
covers), and when the
duration is over it sends its last report and ``{"done": seconds}``. The master stops the
workers once every one is done; a worker stopped earlier (Ctrl-C) sends what it has.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from prefork.core._options import ConfigError
from prefork.load._client import run_closed
from prefork.load._config import LoadConfig
from prefork.load._openloop import run_open
from prefork.load._ramp import run_ramped
from prefork.load._scenario_run import run_scenario
from prefork.load._schedule import RateSchedule, offset, share
from prefork.load._stages import StagedSchedule, Stages, split_level
from prefork.load._tally import Tally
from prefork.load._targets import target_of
from prefork.worker import Worker


async def _after(delay: float, driver: Callable[[], Coroutine[Any, Any, object]]) -> object:
    """Run ``driver()`` once ``delay`` seconds have passed (``--start-at``); its result."""
    if delay > 0:
        await asyncio.sleep(delay)
    return await driver()


def split(total: int, parts: int, index: int) -> int:
    """Part ``index`` of ``total`` split as evenly as can be over ``parts``."""
    return total // parts + (1 if index < total % parts else 0)


class LoadWorker(Worker):
    """Options: ``load`` (a ``LoadConfig``) and ``parts`` (how many workers share it)."""

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        if not isinstance(options.get("load"), LoadConfig):
            raise ConfigError("a LoadWorker needs load=LoadConfig(...)")
        parts = options.get("parts")
        if not isinstance(parts, int) or parts < 1:
            raise ConfigError(f"parts must be a whole number >= 1, got {parts!r}")

    async def init(self) -> None:
        plan: LoadConfig = self.options["load"]
        parts: int = self.options["parts"]
        slot = (self.id - 1) % parts  # ids of the first generation are 1..parts
        loop = asyncio.get_running_loop()
        self.tally = Tally()
        self._tick = 0
        self._finished = False
        # time.monotonic() is loop.time()'s clock at full resolution (uvloop rounds it to the
        # millisecond): open-loop latencies run from these times. --start-at: the wall clock
        # says when, every machine's worker waits for it.
        delay = 0.0 if plan.start_at is None else max(0.0, plan.start_at - time.time())
        self._started = self._last = time.monotonic() + delay
        self._deadline = deadline = self._started + plan.duration
        target = target_of(plan)
        connections = split(plan.connections, parts, slot)
        schedule: RateSchedule | StagedSchedule | None = None
        if plan.rate is not None and plan.stages:
            # One schedule for the run, every worker taking every parts-th send of it.
            shape = Stages(plan.rate, plan.stages)
            schedule = StagedSchedule(shape, self._started, stride=parts, first=slot)
        elif plan.rate is not None:
            rate = share(plan.rate, parts, slot)
            schedule = RateSchedule(rate, self._started + offset(parts, slot, plan.rate))
        driver: Callable[[], Coroutine[Any, Any, object]]
        if plan.scenario is not None:
            module, _, name = plan.scenario.partition(":")
            func = getattr(importlib.import_module(module), name)
            allowed = None
            if plan.stages and schedule is None:  # connections ramped from the start
                ramp, start = Stages(0, plan.stages), self._started

                def allowed(now: float) -> int:
                    return split_level(ramp.level(now - start), parts, slot)

            driver = functools.partial(
                run_scenario,
                func,
                target,
                connections,
                deadline,
                self.tally,
                timeout=plan.timeout,
                schedule=schedule,
                allowed=allowed,
                loop=loop,
            )
        elif schedule is not None:
            driver = functools.partial(
                run_open,
                target,
                connections,
                schedule,
                deadline,
                self.tally,
                timeout=plan.timeout,
                loop=loop,
            )
        elif plan.stages:
            driver = functools.partial(
                run_ramped,
                target,
                connections,
                Stages(0, plan.stages),
                deadline,
                self.tally,
                parts=parts,
                slot=slot,
                timeout=plan.timeout,
                loop=loop,
            )
        else:
            driver = functools.partial(
                run_closed,
                target,
                connections,
                deadline,
                self.tally,
                timeout=plan.timeout,
                loop=loop,
            )
        self._ticker = loop.call_later(delay + 1.0, self._report_second)
        self._driver = loop.create_task(_after(delay, driver))
        self._driver.add_done_callback(self._done)

    def _report_second(self) -> None:
        # A busy loop runs the timer late: the report says how long it covers.
        now = time.monotonic()
        span, self._last = now - self._last, now
        self._tick += 1
        self.report({"tick": self._tick, "span": span, **self.tally.report()})
        self._ticker = asyncio.get_running_loop().call_later(1.0, self._report_second)

    def _done(self, driver: asyncio.Task[object]) -> None:
        """The duration is over (or the run was cut short): the last report, then done."""
        if self._finished:
            return
        self._finished = True
        self._ticker.cancel()
        # The run's own duration: from the warm-up's end (the loops return its length) up to
        # the deadline, not the connections' set-up or closing.
        done = not driver.cancelled() and driver.exception() is None
        result = driver.result() if done else None
        shift = result if isinstance(result, float) else 0.0
        elapsed = max(0.0, min(time.monotonic(), self._deadline + shift) - self._started - shift)
        self.report({"tick": self._tick + 1, "last": True, "span": 0.0, **self.tally.report()})
        failure = None if driver.cancelled() else driver.exception()
        if failure is not None:  # a bug of ours or of the scenario's set-up: say it, once
            self.send({"done": elapsed, "failed": f"{type(failure).__name__}: {failure}"})
        else:
            self.send({"done": elapsed})

    async def prepare_for_shutdown(self) -> None:
        """Stopped before the end (Ctrl-C): what was counted still reaches the master."""
        if not self._driver.done():
            self._driver.cancel()
            await asyncio.wait({self._driver})  # its connections close; nothing is raised
        self._done(self._driver)
        self.shutdown()

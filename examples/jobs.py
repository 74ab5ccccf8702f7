"""A worker type with no socket: a background loop, as the README's Python API example runs it.

``send()`` is for events the master's own code reacts to (``worker_message`` callbacks);
``report()`` is for operational data (``worker_report`` callbacks: counts, timings).
"""

from __future__ import annotations

import asyncio

from prefork import Worker


class JobsWorker(Worker):
    """Does a job every ``interval`` seconds (an option of its broker) until it is stopped."""

    async def init(self) -> None:
        self.done = 0
        self.task = asyncio.get_running_loop().create_task(self.run_jobs())

    async def run_jobs(self) -> None:
        while True:
            await asyncio.sleep(self.options.get("interval", 1.0))
            self.done += 1
            self.send({"job": self.done})  # an event for the master's callbacks
            self.report({"jobs_done": self.done})  # operational data

    async def prepare_for_shutdown(self) -> None:
        self.task.cancel()  # a job in progress could be awaited here instead
        self.shutdown()

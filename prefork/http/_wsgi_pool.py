"""The threads of one worker that run a WSGI app (``--threads N``), and the stuck-thread rule.

Requests beyond the pool wait in one FIFO queue, in the order they were read. The queue is
bounded without a bound of its own: a connection stops reading while its request waits (it
is ``BUSY``, or ``BODY`` with at most ``BODY_BUFFER`` of body held), so each connection has at
most one request queued, and the connections of a worker are bounded by
``--limit-concurrency`` (503 beyond) and by the listen backlog.

Stuck threads: the worker's heartbeat comes from its event loop, so a thread blocked forever
does not make the worker look hung. Each thread's request gets ``timeout`` (the broker's
``--timeout``) of the app's own time, checked by the server's sweep (the time the thread
waits for the client, for body bytes or for a slow reader to take a chunk, does not count:
``--body-timeout`` bounds that; the count starts again after each such wait): past it the
request is answered 504 (or its connection closed, if the response had begun), the thread's
stack is logged once, a new thread takes its place (the pool keeps serving at full size),
and ``on_stuck`` asks for the worker's replacement through the rolling path (the thread
cannot be killed; the process that holds it can).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from prefork.http._wsgi import WSGIApp, WSGICycle, thread_stack
from prefork.http._wsgi_environ import Environ

logger = logging.getLogger("prefork.http")


class WSGIPool:
    """``size`` threads running ``app`` for the cycles submitted, in order."""

    def __init__(
        self,
        app: WSGIApp,
        base: Environ,
        size: int,
        *,
        timeout: float = 0.0,
        on_stuck: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.base = base
        self.size = size
        self.timeout = timeout
        self._on_stuck = on_stuck
        self._clock = clock
        self._jobs: queue.SimpleQueue[WSGICycle | None] = queue.SimpleQueue()
        #: What each busy thread runs (written by the threads themselves).
        self._busy: dict[threading.Thread, WSGICycle] = {}
        self._abandoned: set[threading.Thread] = set()
        self.threads: list[threading.Thread] = []
        self.stuck = 0

    def start(self) -> None:
        """Start the threads (after fork: threads do not survive it)."""
        for _ in range(self.size):
            self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._serve, name=f"prefork-wsgi-{len(self.threads)}", daemon=True
        )
        self.threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Let the threads end once the requests queued are served."""
        for _ in self.threads:
            self._jobs.put(None)

    def submit(self, cycle: WSGICycle) -> None:
        """Run the app for ``cycle`` in the next free thread (which calls ``cycle._on_done``
        on the loop when it is through with it)."""
        self._jobs.put(cycle)

    def _serve(self) -> None:
        me = threading.current_thread()
        jobs = self._jobs
        busy = self._busy
        clock = self._clock
        while (cycle := jobs.get()) is not None:
            if cycle.gone:  # the client left while the request waited: nobody to run it for
                cycle.post(cycle._on_done)
                continue
            cycle.since = clock()
            busy[me] = cycle
            cycle.run(self.app, self.base)
            del busy[me]
            if me in self._abandoned:
                return  # a thread that came back after another took its place

    def check(self) -> None:
        """Give up on the requests whose thread ran past ``timeout`` (on the loop)."""
        if not self.timeout:
            return
        now = self._clock()
        for thread, cycle in list(self._busy.items()):
            if cycle.waiting:  # for the client: --body-timeout bounds that, not --timeout
                cycle.since = now
                continue
            if now - cycle.since < self.timeout or cycle.stuck or cycle.ended:
                continue
            self.stuck += 1
            self._abandoned.add(thread)
            logger.error(
                "a WSGI thread ran one request (%s %s) for over %gs (--timeout): answered 504 "
                "(or closed), a new thread takes its place and this worker will be replaced. "
                "Its stack:\n%s",
                cycle.scope["method"],
                cycle.scope["path"],
                self.timeout,
                thread_stack(thread).rstrip(),
            )
            cycle.time_out()
            self._spawn()
            if self._on_stuck is not None:
                self._on_stuck()

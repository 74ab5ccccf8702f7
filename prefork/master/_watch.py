"""``prefork serve --reload``: a file saved under a watched directory rolls new workers in.

The watching is done by a worker of its own (``Watcher``, broker ``reload``, one process, no
socket) beside the HTTP workers: watchfiles watches from Rust threads, and a master with
threads must not fork (a child can inherit a lock held by a thread that does not exist in it).
On a change that counts (``core/_reload.py``: the patterns, and a quiet ``--reload-delay``
after the last change), the watcher sends the master a message, and the master reloads the
HTTP broker through the rolling path: each new worker imports the new code before an old one
leaves, so a syntax error is printed once, the reload is rolled back and the old workers keep
answering until the file is fixed (the next save reloads again).

Rejected: watching in the master's select loop by polling mtimes (a walk of the tree every
fraction of a second: an idle master must use no CPU), and uvicorn's restart of the whole
server (connections dropped, and nothing answers while the code is broken).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefork.core._options import (
    ConfigError,
    build,
    check_fields,
    option,
    seconds,
    strings,
    switch,
)
from prefork.core._payloads import WorkerInfo
from prefork.core._reload import DEFAULT_EXCLUDES, DEFAULT_INCLUDES, Debounce, PathFilter, patterns
from prefork.master._broker import Broker
from prefork.worker import Worker

if TYPE_CHECKING:
    from prefork.master._loop import Master

log = logging.getLogger("prefork.master")

#: The watcher's broker.
BROKER = "reload"
#: What the master's log names of a change, at most.
MAX_NAMED = 3
#: watchfiles groups the events of one save: it hands them over once none came for STEP_MS,
#: and after DEBOUNCE_MS however many keep coming; --reload-delay counts from then.
STEP_MS = 50
DEBOUNCE_MS = 1600
#: How long a stopping watcher waits for watchfiles' thread to notice (it looks every STEP_MS).
STOP_WAIT = 2.0
#: A file's time comes from the kernel's coarse clock, a tick behind ``time.time()``.
MTIME_SLACK = 0.02
NEEDS_WATCHFILES = "--reload needs watchfiles: pip install 'prefork[reload]'"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadConfig:
    """``prefork serve``'s --reload and its family (uvicorn's flags and defaults)."""

    reload: bool = option(
        False,
        "a development server: reload the workers when a watched file changes (the first log "
        "line says so; needs watchfiles: pip install 'prefork[reload]')",
        switch,
        "--reload",
        parse=None,
    )
    reload_dir: tuple[str, ...] = option(
        (),
        "with --reload: watch DIR; repeatable (default: the working directory and --app-dir)",
        strings,
        "--reload-dir",
        metavar="DIR",
        repeat=True,
    )
    reload_include: tuple[str, ...] = option(
        (),
        f"with --reload: also reload when a file matching PATTERN changes; repeatable "
        f"({', '.join(DEFAULT_INCLUDES)} always, unless excluded)",
        strings,
        "--reload-include",
        metavar="PATTERN",
        repeat=True,
    )
    reload_exclude: tuple[str, ...] = option(
        (),
        f"with --reload: ignore files and directories matching PATTERN; repeatable "
        f"({', '.join(DEFAULT_EXCLUDES)} always, unless included)",
        strings,
        "--reload-exclude",
        metavar="PATTERN",
        repeat=True,
    )
    reload_delay: float = option(
        0.25,
        "with --reload: seconds without a change before the reload starts",
        seconds(),
        "--reload-delay",
        metavar="SECONDS",
        parse=float,
    )

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ReloadConfig:
        """Build from keyword options; a --reload-* option without --reload is a
        ``ConfigError`` (it would do nothing)."""
        config = build(cls, "reload", options)
        idle = [name for name in options if name != "reload"]
        if idle and not config.reload:
            flag = "--" + idle[0].replace("_", "-")
            raise ConfigError(f"{flag} needs --reload; add --reload or drop {flag}")
        return config


@dataclass(frozen=True, slots=True)
class Watch:
    """What the watcher watches (absolute directories), which changes count, and the delay."""

    dirs: tuple[str, ...]
    filter: PathFilter
    delay: float


def plan(config: ReloadConfig, app_dir: str) -> Watch:
    """The ``Watch`` for ``config``, with directories relative to the working directory (by
    default it and ``app_dir``). Raises ``ConfigError`` if watchfiles is not installed or a
    directory is not one. Imports watchfiles here, in the master: that starts no thread."""
    try:
        importlib.import_module("watchfiles")
    except ImportError:
        raise ConfigError(NEEDS_WATCHFILES) from None
    found = []
    for given in config.reload_dir or (".", app_dir):
        path = os.path.realpath(given)
        if not os.path.isdir(path):
            raise ConfigError(f"--reload-dir {given!r} is not a directory")
        found.append(path)
    # A directory inside another one is watched with it (watchfiles watches recursively).
    dirs = [d for d in found if not any(_inside(d, other) for other in found)]
    dirs = list(dict.fromkeys(dirs))
    includes, excludes = patterns(config.reload_include, config.reload_exclude)
    return Watch(tuple(dirs), PathFilter(tuple(dirs), includes, excludes), config.reload_delay)


def _inside(path: str, other: str) -> bool:
    return path != other and path.startswith(other.rstrip("/") + "/")


def announce(watch: Watch) -> None:
    """Log that --reload is on (``prefork serve`` does, before the master starts: the first
    line of the log), what it watches, and that it is not for production: as a warning, or
    at the least severe level the log shows (``--log-level error`` shows it too)."""
    log.log(
        max(logging.WARNING, log.getEffectiveLevel()),
        "--reload: watching %s for %s; a development server, not for production",
        ", ".join(watch.dirs),
        ", ".join(watch.filter.includes),
    )


def watch(master: Master, target: Broker, watch: Watch) -> Broker:
    """Declare the watcher's broker on ``master``: a change it reports reloads ``target``.
    Raises ``ConfigError`` if ``target`` preloads its worker (new code could not load)."""
    if target.config.preload:
        raise ConfigError(
            "--reload cannot load new code with --preload (the app is imported once, in the "
            "master); drop one of them"
        )
    broker = master.broker(BROKER, Watcher, workers=1, watch=watch)
    broker.on("worker_message", functools.partial(changed, target))
    broker.on("worker_ready", functools.partial(one_watcher, broker))
    return broker


def one_watcher(broker: Broker, info: WorkerInfo) -> None:
    """SIGTTIN adds a worker to every broker: the watcher's goes again (two would report
    each change twice)."""
    if broker.workers > 1:
        broker.scale(1)


def changed(target: Broker, msg: Any, info: WorkerInfo) -> None:
    """A watcher reported a change (``{"changed": [paths], "count": n}``): reload ``target``."""
    if not isinstance(msg, dict) or not isinstance(msg.get("changed"), list):
        log.warning("[%s] ignored a message from worker %d: %.80r", BROKER, info.id, msg)
        return
    paths = [_shown(str(p)) for p in msg["changed"]]
    more = msg.get("count", len(paths)) - len(paths)
    named = ", ".join(paths) + (f" and {more} more" if isinstance(more, int) and more > 0 else "")
    log.info("[%s] %s changed: reloading %s", BROKER, named, target.type)
    target.reload()


def _shown(path: str) -> str:
    """``path`` relative to the working directory when it is below it (as uvicorn says it)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def saved_since(watch: Watch, since: float) -> Iterator[str]:
    """The paths under ``watch`` that count and were modified at ``since`` or later (a walk
    that enters no directory the filter prunes; a file gone meanwhile is skipped)."""
    for top in watch.dirs:
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not watch.filter.prunes(os.path.join(root, d))]
            for name in files:
                path = os.path.join(root, name)
                if not watch.filter(path):
                    continue
                try:
                    modified = os.stat(path).st_mtime
                except OSError:
                    continue
                if modified >= since:
                    yield path


class Watcher(Worker):
    """Watches ``options["watch"]`` (a ``Watch``); sends ``{"changed": [...], "count": n}``
    (the first ``MAX_NAMED`` paths) once the changes have settled."""

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        if not isinstance(options.get("watch"), Watch):
            raise ConfigError("a Watcher needs watch=Watch(...) (made by prefork serve --reload)")

    async def init(self) -> None:
        # A save from now until the watches are set up would go unseen, while the HTTP
        # workers started beside this watcher may have imported the code before it: once
        # watching, a walk of the tree reports what was saved meanwhile.
        since = time.time() - MTIME_SLACK
        import watchfiles  # here: the master only checks that it is there

        # Its "1 change detected" lines: the master says what changed and what it does.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        watch: Watch = self.options["watch"]
        self._debounce = Debounce(watch.delay)
        self._timer: asyncio.TimerHandle | None = None
        self._stop = asyncio.Event()
        changes = watchfiles.awatch(
            *watch.dirs,
            watch_filter=lambda _change, path: watch.filter(path),
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=self._stop,
            ignore_permission_denied=True,
        )
        self._task = asyncio.get_running_loop().create_task(self._follow(changes))
        # The task's first step sets the watches up (watchfiles does it before it waits in a
        # thread): only then is this worker ready, and a save after that is seen.
        await asyncio.sleep(0)
        if self._task.done():
            self._task.result()  # it could not watch: this worker fails to start, saying why
        self._task.add_done_callback(self._ended)
        loop = asyncio.get_running_loop()
        missed = await loop.run_in_executor(None, lambda: list(saved_since(watch, since)))
        if missed:
            self._debounce.changed(missed, self._now())
            self._arm()

    async def _follow(self, changes: AsyncIterator[set[tuple[Any, str]]]) -> None:
        async for batch in changes:
            self._debounce.changed((path for _, path in batch), self._now())
            self._arm()

    def _ended(self, task: asyncio.Task[None]) -> None:
        """Watching ended: asked to (a stop), or it failed (this watcher leaves, and the
        master starts another)."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("[%s] watching failed; leaving to be replaced", self.type, exc_info=exc)
            self.shutdown(1)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _arm(self) -> None:
        """Set the timer for the deadline of the changes waiting (there are some)."""
        if self._timer is not None:
            self._timer.cancel()
        deadline = self._debounce.deadline
        assert deadline is not None
        self._timer = asyncio.get_running_loop().call_at(deadline, self._fire)

    def _fire(self) -> None:
        paths = self._debounce.fire(self._now())
        if paths is None:  # a timer may run a hair early: wait for the deadline itself
            self._arm()
            return
        self._timer = None
        self.send({"changed": paths[:MAX_NAMED], "count": len(paths)})

    async def prepare_for_shutdown(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT)
        except TimeoutError:
            log.warning("[%s] watchfiles did not stop in %gs; leaving anyway", self.type, STOP_WAIT)
        self.shutdown()

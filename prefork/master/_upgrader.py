"""An in-place upgrade (``prefork ctl upgrade``) as the master's select loop runs it, step by
step: asked (the check of the new code starts: ``_upgrade.Check``), checked (refused with the
check's error, or due), due (the loop re-executes at the top of its next turn, when no event
is half handled: ``_upgrade.hand_over``), and in the new image taken over (``take_over``).
The effects themselves are in ``_upgrade.py``; the master's loop only routes to this.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from prefork.core._events import Action
from prefork.core._supervisor import Supervisor
from prefork.core._version import VERSION
from prefork.master import _process, _upgrade
from prefork.master._channels import Channels
from prefork.ops._console import Console

log = logging.getLogger("prefork.master")


class Upgrader:
    """The upgrades of one master: its ``supervisor`` says whether one may start and holds
    the records handed over, its ``console`` answers the peer that asked (when refused) and
    is handed over too. ``relaunch`` is how the master starts again (``prefork serve`` sets
    it; None: refused). ``open`` gives it what the running loop holds."""

    def __init__(self, supervisor: Supervisor, console: Console) -> None:
        self.relaunch: _upgrade.Relaunch | None = None
        self._supervisor = supervisor
        self._console = console
        self._check: _upgrade.Check | None = None
        self._due = False
        self._selector: selectors.BaseSelector | None = None
        self._sockets: Mapping[str, list[socket.socket]] = {}
        self._channels: Channels | None = None
        self._waiting: Callable[[], list[int]] = list

    def open(
        self,
        selector: selectors.BaseSelector,
        sockets: Mapping[str, list[socket.socket]],
        channels: Channels,
        waiting: Callable[[], list[int]],
    ) -> None:
        """The running loop's: its ``selector`` (the check's output is read there), the
        brokers' listening ``sockets``, the workers' ``channels`` and what takes the signals
        not handled yet off the wake-up fd (``waiting``)."""
        self._selector, self._sockets, self._channels = selector, sockets, channels
        self._waiting = waiting

    # -- the old image -----------------------------------------------------------------------

    def ask(self) -> str:
        """Start an upgrade (the console's ``upgrade`` command). Returns why not ("":
        started; the console hears of the outcome later)."""
        under_way = self._check is not None or self._due
        refused = _upgrade.refusal(self.relaunch, self._supervisor.ledger, under_way)
        if refused or self.relaunch is None:
            return refused or _upgrade.NOT_SERVE
        assert self._selector is not None  # the console asks once the loop runs: open()
        policies = [b.policy for b in self._supervisor.ledger.brokers.values()]
        most = max(p.boot_timeout for p in policies) + _upgrade.CHECK_MARGIN
        try:
            check = _upgrade.start_check(self.relaunch, time.monotonic() + most)
        except OSError as exc:
            return f"cannot start the check of the new code: {exc}"
        self._selector.register(check.fd, selectors.EVENT_READ, check)
        self._check = check
        log.info("upgrade: checking the installed prefork (pid %d: --check-config)", check.pid)
        return ""

    def deadline(self) -> float | None:
        return None if self._check is None else self._check.deadline

    def expire(self, now: float) -> None:
        """Past the check's deadline: it is killed (and reaped as a stranger), refused."""
        check = self._check
        if check is not None and now >= check.deadline:
            check.kill()
            self._end(
                f"the check of the new code did not end within --boot-timeout + "
                f"{_upgrade.CHECK_MARGIN:g}s; it was killed"
            )

    def read(self) -> None:
        """The selector says the check wrote (or closed its end)."""
        if self._check is not None:
            self._check.read()
            self._judge()

    def reaped(self, dead: _process.Reaped) -> bool:
        """Whether ``dead`` is the check (then it is taken)."""
        if self._check is None or dead.pid != self._check.pid:
            return False
        self._check.exited(dead)
        self._judge()
        return True

    def _judge(self) -> None:
        if self._check is not None and self._check.done:
            self._end(self._check.verdict())

    def _end(self, verdict: str) -> None:
        assert self._check is not None and self._selector is not None
        self._selector.unregister(self._check.fd)
        self._check.close()
        self._check = None
        if verdict:
            self._refuse(verdict)
        else:
            self._due = True

    def _refuse(self, reason: str) -> None:
        log.error("upgrade refused: %s", reason)
        self._console.upgrade_refused(reason)

    def hand_over_if_due(self) -> None:
        """At the top of the loop: re-execute if the check passed (returns only if that
        failed, or something came in the way meanwhile: a reload, a drain, a stop)."""
        if not self._due:
            return
        self._due = False
        refused = _upgrade.refusal(self.relaunch, self._supervisor.ledger, False)
        if refused or self.relaunch is None:
            self._refuse(refused or _upgrade.NOT_SERVE)
            return
        assert self._channels is not None
        doc, carried = _upgrade.export(
            self._supervisor, self._sockets, self._channels, self._console
        )
        log.info("upgrade: re-executing %s", " ".join(self.relaunch.argv))
        try:
            _upgrade.hand_over(self.relaunch, doc, carried, self._waiting)
        except OSError as exc:
            self._refuse(f"cannot re-execute the master: {exc}")

    # -- the new image -----------------------------------------------------------------------

    def take_over(
        self, doc: Mapping[str, Any], open_console: Callable[[Mapping[str, Any]], None]
    ) -> tuple[list[Action], dict[int, int]]:
        """Adopt what the image before handed over (``_upgrade.take_over``); returns the
        actions the supervisor asks for and each adopted worker's pid by its id. Raises
        ``ConfigError`` if ``doc`` does not fit this master."""
        assert self._channels is not None
        actions = _upgrade.take_over(doc, self._supervisor, self._channels, open_console)
        # The handlers are in place: the signals that came during the exec (a SIGCHLD for a
        # worker that left meanwhile, too) reach the wake-up fd from here on.
        _upgrade.unblock()
        workers = self._supervisor.ledger.workers.values()
        return actions, {w.id: w.pid for w in workers if w.pid}

    def said(self) -> str:
        """What the log says of this image, once it has taken over."""
        return f"upgraded in place to prefork {VERSION} (upgrade {self._console.upgrades})"

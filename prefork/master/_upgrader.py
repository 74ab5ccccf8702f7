"""An in-place upgrade (``prefork ctl upgrade``) as the master's select loop runs it, step by
step: asked (the check of the new code starts: ``_upgrade.Check``), checked (refused with the
check's error, or due), due (the loop re-executes at the top of its next turn, when no event
is half handled: ``_upgrade.hand_over``). The effects themselves are in ``_upgrade.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import time
from collections.abc import Callable
from typing import Any

from prefork.core._ledger import Ledger
from prefork.master import _process, _upgrade
from prefork.ops._console import Console

log = logging.getLogger("prefork.master")
Export = Callable[[], tuple[dict[str, Any], list[int]]]


class Upgrader:
    """The upgrade of one master: ``ledger`` says whether it may start, ``console`` answers
    the peer that asked (when refused), ``export`` gives the state to hand over and its fds.
    ``relaunch`` is how the master starts again (``prefork serve`` sets it; None: refused)."""

    def __init__(self, ledger: Ledger, console: Console, export: Export) -> None:
        self.relaunch: _upgrade.Relaunch | None = None
        self._ledger = ledger
        self._console = console
        self._export = export
        self._check: _upgrade.Check | None = None
        self._selector: selectors.BaseSelector | None = None
        self._due = False

    def ask(self, selector: selectors.BaseSelector) -> str:
        """Start an upgrade: its check runs on ``selector``. Returns why not ("": started)."""
        under_way = self._check is not None or self._due
        refused = _upgrade.refusal(self.relaunch, self._ledger, under_way)
        if refused or self.relaunch is None:
            return refused or _upgrade.NOT_SERVE
        policies = [b.policy for b in self._ledger.brokers.values()]
        most = max(p.boot_timeout for p in policies) + _upgrade.CHECK_MARGIN
        try:
            check = _upgrade.start_check(self.relaunch, time.monotonic() + most)
        except OSError as exc:
            return f"cannot start the check of the new code: {exc}"
        selector.register(check.fd, selectors.EVENT_READ, check)
        self._check, self._selector = check, selector
        log.info("upgrade: checking the installed prefork (pid %d: --check-config)", check.pid)
        return ""

    def deadline(self) -> float | None:
        return None if self._check is None else self._check.deadline

    def expire(self, now: float) -> None:
        check = self._check
        if check is not None and now >= check.deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(check.pid, signal.SIGKILL)  # and reaped as a stranger
            self._end(
                f"the check of the new code did not end within {_upgrade.CHECK_MARGIN:g}s "
                "past --boot-timeout; it was killed"
            )

    def read(self) -> None:
        """The selector says the check wrote (or closed its end)."""
        assert self._check is not None
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
        refused = _upgrade.refusal(self.relaunch, self._ledger, False)
        if refused or self.relaunch is None:
            self._refuse(refused or _upgrade.NOT_SERVE)
            return
        doc, carried = self._export()
        log.info("upgrade: re-executing %s", " ".join(self.relaunch.argv))
        try:
            _upgrade.hand_over(self.relaunch, doc, carried)
        except OSError as exc:
            self._refuse(f"cannot re-execute the master: {exc}")

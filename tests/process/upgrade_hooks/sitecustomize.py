"""Hooks into the processes of an in-place upgrade, for test_process_upgrade.py: Python
imports this module at start-up when its directory is on PYTHONPATH, before any of prefork
runs, so a test can act at a moment it could not otherwise reach. Steered by files in the
directory ``$UPGRADE_HOOKS`` names; each is removed as it is used (one upgrade each).

In the new image of the master (``PREFORK_UPGRADE`` set: inside the exec window, its
signals still blocked):
- ``signal``: a signal number the master sends itself;
- ``kill``: a worker's pid, killed; the hook returns once the worker has exited (a zombie
  the new image has to reap).

In the check (``PREFORK_UPGRADE_FORMAT`` set, ``--check-config``):
- ``check``: ``hang`` (it sleeps past its deadline) or ``flood`` (5 000 lines of 400 bytes,
  then exit 3).
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _take(name: str) -> str | None:
    path = os.path.join(os.environ["UPGRADE_HOOKS"], name)
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    os.unlink(path)
    return text


def _new_image() -> None:
    if (signum := _take("signal")) is not None:
        os.kill(os.getpid(), int(signum))
    if (pid := _take("kill")) is not None:
        os.kill(int(pid), signal.SIGKILL)
        os.waitid(os.P_PID, int(pid), os.WEXITED | os.WNOWAIT)


def _check() -> None:
    what = _take("check")
    if what == "hang":
        time.sleep(3600)
    elif what == "flood":
        for i in range(5_000):
            sys.stdout.write(f"flood line {i} " + "x" * 400 + "\n")
        sys.stdout.flush()
        os._exit(3)


if "UPGRADE_HOOKS" in os.environ:
    if "PREFORK_UPGRADE" in os.environ:
        _new_image()
    elif "PREFORK_UPGRADE_FORMAT" in os.environ:
        _check()

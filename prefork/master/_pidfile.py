"""The master's pid file: claimed before anything binds, written atomically, removed on exit
only while it still holds our pid (never another master's)."""

from __future__ import annotations

import contextlib
import os

from prefork.core._options import ConfigError


def claim(path: str, pid: int) -> None:
    """Write ``pid`` to ``path`` (a temporary file renamed over it).

    Raises ``ConfigError`` if the directory does not exist or cannot be written, or if the
    file names a live process other than ``pid`` (another master, most likely).
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(
            f"cannot write pid file {path!r}: no directory {directory!r}; create it first"
        )
    holder = _read(path)
    if holder is not None and holder != pid and _alive(holder):
        raise ConfigError(
            f"pid file {path!r} names running process {holder}; is another master running? "
            "stop it, or choose another --pid"
        )
    temporary = f"{path}.{pid}.tmp"
    try:
        with open(temporary, "w") as f:
            f.write(f"{pid}\n")
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ConfigError(f"cannot write pid file {path!r}: {exc.strerror}") from None


def release(path: str, pid: int) -> None:
    """Remove ``path`` if it still holds ``pid``."""
    if _read(path) == pid:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _read(path: str) -> int | None:
    """The pid in the file, if it holds one (ASCII digits, a C int: what os.kill takes)."""
    try:
        with open(path, "rb") as f:
            text = f.read(64).strip()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    pid = int(text) if text.isdigit() else 0
    return pid if 0 < pid < 1 << 31 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's process
    return True

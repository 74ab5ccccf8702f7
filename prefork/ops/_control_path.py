"""Where a master's control socket lives when ``--control`` does not say (issue 12, spec 5).

The master and ``prefork ctl`` must derive the same path from the same inputs, so the rule is
here once, as functions of what they are given (the environment, the uid, the pid): beside the
pid file when there is one, else ``<pid>.ctl`` in a private runtime directory.

The runtime directory may be shared ``/tmp``: anyone could create ``/tmp/prefork-<uid>``
before us and wait for our socket in it, so the master refuses a directory it does not own or
that others may enter (as ssh-agent and tmux do), rather than chmod one it did not make.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Mapping

from prefork.core._options import ConfigError

SUFFIX = ".ctl"
#: How long ``live_sockets`` waits for one socket to accept (a live master answers at once).
PROBE_TIMEOUT = 1.0


def for_pidfile(pidfile: str) -> str:
    """The control socket beside ``pidfile``: its ``.pid`` suffix replaced by ``.ctl``, or
    ``.ctl`` appended when it has none (``run/web.pid`` -> ``run/web.ctl``)."""
    stem = pidfile[: -len(".pid")] if pidfile.endswith(".pid") else pidfile
    return stem + SUFFIX


def runtime_dir(environ: Mapping[str, str], uid: int) -> str:
    """``$XDG_RUNTIME_DIR/prefork`` when XDG_RUNTIME_DIR is set, else ``/tmp/prefork-<uid>``."""
    base = environ.get("XDG_RUNTIME_DIR")
    if base:
        return os.path.join(base, "prefork")
    return f"/tmp/prefork-{uid}"


def default_path(pidfile: str | None, environ: Mapping[str, str], uid: int, pid: int) -> str:
    """What a master binds when not given ``--control``: beside its pid file, else
    ``<pid>.ctl`` in ``runtime_dir`` (which the master makes with ``ensure_private_dir``)."""
    if pidfile is not None:
        return for_pidfile(pidfile)
    return os.path.join(runtime_dir(environ, uid), f"{pid}{SUFFIX}")


def ensure_private_dir(path: str, uid: int) -> None:
    """Create directory ``path`` with mode 0700 if it is missing.

    Raises ``ConfigError`` (one line) when it cannot be made, or when what is there is not a
    directory (a symlink is not one), is not owned by ``uid``, or lets group or others in.
    """
    advice = "or choose the socket's path with --control PATH"
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # the umask may have taken bits away; never adds any
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(
            f"cannot create the control socket's directory {path}: {exc.strerror}; {advice}"
        ) from None
    found = os.lstat(path)
    if not stat.S_ISDIR(found.st_mode):
        raise ConfigError(
            f"{path} is in the way of the control socket's directory (not a directory); "
            f"remove it, {advice}"
        )
    if found.st_uid != uid:
        raise ConfigError(
            f"the control socket's directory {path} belongs to uid {found.st_uid}, not to "
            f"uid {uid}; remove it, {advice}"
        )
    mode = stat.S_IMODE(found.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"the control socket's directory {path} is open to other users (mode "
            f"{mode:04o}); chmod 700 it, {advice}"
        )


def live_sockets(directory: str) -> list[str]:
    """The ``*.ctl`` unix sockets in ``directory`` that accept a connection, sorted; none
    when the directory does not exist. A stale socket (its master gone) is left out."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    paths = (os.path.join(directory, n) for n in sorted(names) if n.endswith(SUFFIX))
    return [p for p in paths if _accepts(p)]


def _accepts(path: str) -> bool:
    with contextlib.suppress(OSError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(PROBE_TIMEOUT)
            probe.connect(path)
            return True
    return False

"""The master's log: the line format of the master and its workers, a default handler for
programs that set up no logging, and reopening log files (SIGUSR1, after logrotate)."""

from __future__ import annotations

import logging

#: The log line of the master and its workers (``prefork serve`` uses it too).
LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def default_logging() -> None:
    """With no logging configured at all, the master's INFO lines go to stderr: a program on
    the Python API sees what its master does without setting logging up."""
    ours = logging.getLogger("prefork")
    if logging.getLogger().handlers or ours.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    ours.addHandler(handler)
    if ours.level == logging.NOTSET:
        ours.setLevel(logging.INFO)


def reopen_log_files() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()
                handler.stream = handler._open()
            finally:
                handler.release()

"""Unit-test fixtures shared by every module."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    """Each test's logging set-up is undone: ``prefork serve`` configures the root logger,
    whose handlers would outlive the test (and its captured streams)."""
    root = logging.getLogger()
    access = logging.getLogger("prefork.access")
    saved = (root.handlers[:], root.level, access.handlers[:], access.level, access.propagate)
    yield
    for logger, handlers in ((root, saved[0]), (access, saved[2])):
        for h in logger.handlers:
            if h not in handlers:
                h.close()
        logger.handlers[:] = handlers
    root.setLevel(saved[1])
    access.setLevel(saved[3])
    access.propagate = saved[4]

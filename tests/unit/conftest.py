"""Unit-test fixtures shared by every module."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    """Each test's logging set-up is undone: ``prefork serve`` configures the root logger,
    whose handlers would outlive the test (and its captured streams)."""
    loggers = [logging.getLogger(name) for name in ("", "prefork", "prefork.access")]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, handlers, level, propagate in saved:
        for h in logger.handlers:
            if h not in handlers:
                h.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate

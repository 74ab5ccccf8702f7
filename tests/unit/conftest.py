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


#: The HTTP test modules run with each request parser: ``auto`` (the fast path, h11 for the
#: rest) and ``h11`` (h11 for every head, as ``--http h11``). Both must give the same answers.
_HTTP_MODULES = ("test_http", "test_websocket", "test_ws_")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.startswith(_HTTP_MODULES):
        metafunc.fixturenames.append("http_parser")
        metafunc.parametrize("http_parser", ["auto", "h11"], indirect=True)


@pytest.fixture(autouse=True)
def _http_parser_mode(request: pytest.FixtureRequest) -> None:
    """Set up the parser mode of a test parametrized above: a name appended to
    ``fixturenames`` in ``pytest_generate_tests`` is parametrized but not set up by pytest 9
    (every ``[h11-...]`` test ran with the fast path), unless the test asks for it."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "http_parser" in callspec.params:
        request.getfixturevalue("http_parser")


@pytest.fixture
def http_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``h11``: the fast path declines every head, so h11 parses all of them."""
    if request.param == "h11":
        from prefork.http import _parse

        monkeypatch.setattr(_parse, "fast_head", lambda buf, end, max_fields: None)
    return str(request.param)

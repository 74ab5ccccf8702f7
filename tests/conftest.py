"""Suite-wide hooks."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    """Drop unreadable coverage data files before pytest-cov combines them.

    pytest-cov combines in its own pytest_runtestloop wrapper once the tests have run (not in
    pytest_sessionfinish); trylast makes this wrapper the inner one, so this runs after the
    last test and before that combine. A process SIGKILLed while coverage writes its data at
    exit leaves an empty file, which the combine would warn about ("isn't a coverage data
    file") and leave behind; it holds no data, so removing it loses nothing. A line names
    each file removed, so dropped data never goes unnoticed.
    """
    result = yield
    import coverage
    from coverage.data import CoverageData
    from coverage.exceptions import CoverageException

    cov = coverage.Coverage.current()  # pytest-cov's, still running; None without --cov
    if cov is None:
        return result
    data_file = Path(cov.config.data_file).absolute()
    removed = []
    for path in sorted(data_file.parent.glob(f"{data_file.name}.*")):
        try:
            CoverageData(str(path), read_only=True).read()  # what combine() does
        except CoverageException:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if removed and reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(f"removed unreadable coverage data: {', '.join(removed)}")
    return result

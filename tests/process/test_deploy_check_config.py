"""`prefork serve --check-config` accepts the arguments each deployment example passes
(``examples/deploy/``): every value in range and the app importable, as the container or the
service would start it. The app is the image's and the service's ``hello.py`` (the image copies
``examples/hello.py`` into its working directory; ``--app-dir`` points there instead)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from deploy_examples import deployments
from helpers import ROOT, MasterProcess

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("name", ["Dockerfile", "k8s.yaml", "prefork.service"])
def test_prefork_serve_check_config_accepts_the_deployment(
    start: Callable[..., MasterProcess], name: str
) -> None:
    args = [*deployments()[name], "--app-dir", str(ROOT / "examples"), "--check-config"]
    checked = start([sys.executable, "-m", "prefork", "serve", *args])
    assert checked.wait_exit() == 0, checked.stderr()
    assert checked.stderr().splitlines() == [
        "prefork: template off: no templates (--template off); workers import the code",
        "prefork: the options and the app are fine",
    ]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (["--shutdown-delay", "-1"], "shutdown_delay must be a number of seconds >= 0"),
        (["--app-dir", str(ROOT / "tests")], "cannot import app 'hello:app': no module named"),
    ],
)
def test_check_config_checks_what_parsing_the_flags_does_not(
    start: Callable[..., MasterProcess], change: list[str], error: str
) -> None:
    """The values' own checks and the app's import (the unit test parses the flags only)."""
    args = [*deployments()["k8s.yaml"], "--app-dir", str(ROOT / "examples"), *change]
    checked = start([sys.executable, "-m", "prefork", "serve", *args, "--check-config"])
    assert checked.wait_exit() == 2
    (line,) = checked.stderr().splitlines()
    assert line.startswith(f"prefork: error: {error}")

"""``examples/load-indexed-job.yaml``, the multi-machine recipe (README, "Runs larger than one
machine"): every copy runs ``prefork load`` with flags prefork's own parser takes, at a
``--start-at`` the recipe fills in, all copies at once, none rerun, each printing ``--json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from prefork.cli import build_parser
from prefork.load import LoadConfig
from prefork.load._config import parse_start_at

JOB = Path(__file__).resolve().parents[2] / "examples" / "load-indexed-job.yaml"


def job() -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(JOB.read_text()) if d is not None]
    return doc  # type: ignore[no-any-return]


def test_the_copies_run_together_once() -> None:
    spec = job()["spec"]
    assert job()["kind"] == "Job" and spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2 and spec["backoffLimit"] == 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_each_copy_runs_prefork_load_with_flags_it_takes() -> None:
    (container,) = job()["spec"]["template"]["spec"]["containers"]
    assert container["command"][-2].endswith('exec prefork load "$@"')
    args = [a.replace("START_AT_VALUE", "2026-12-06T10:00:00Z") for a in container["args"]]
    parsed = build_parser().parse_args(["load", *args])
    options = {k: v for k, v in vars(parsed).items() if v is not None and k != "command"}
    config = LoadConfig.from_options(options)
    assert config.json and config.rate == 5000 and config.duration == 300
    assert config.start_at == parse_start_at("2026-12-06T10:00:00Z")
    assert "START_AT_VALUE" in JOB.read_text().split("apiVersion")[0]  # the recipe fills it in

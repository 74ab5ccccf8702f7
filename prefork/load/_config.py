"""The options of ``prefork load``, each declared once (``prefork/core/_options.py``): the same
declarations check ``LoadConfig`` and give the command its flags, spelled as wrk's users
expect (``-c``, ``-d``, ``-H``, ``--timeout``) with wrk2's ``--rate``.

No I/O here but reading ``--data-file`` in ``body()``; a bad value raises ``ConfigError`` with
one line saying what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefork.core._options import (
    MAX_SECONDS,
    REQUIRED,
    ConfigError,
    build,
    check_fields,
    maybe_text,
    option,
    seconds,
    shown,
    switch,
    text,
    whole,
)
from prefork.load import _threshold
from prefork.load._stages import MAX_STAGES

_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
#: The highest --rate: more than one machine sends; a larger number is a slip of the finger.
MAX_RATE = 10_000_000


class DurationError(argparse.ArgumentTypeError, ValueError):
    """A word that is not a duration. argparse prints an ``ArgumentTypeError``'s own message
    (for a ``ValueError`` it names the parsing function instead)."""


def parse_duration(word: str) -> float:
    """``10``, ``10s``, ``1m``, ``500ms``, ``1h`` -> seconds. Raises ``DurationError`` (a
    ``ValueError``) otherwise."""
    match = _DURATION.fullmatch(word)
    if match is None:
        raise DurationError(f"{word!r} is not a duration like 10s, 1m or 500ms")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _url(name: str, value: Any) -> Any:
    text(name, value)
    if value[:7].lower() != "http://" and value[:8].lower() != "https://":
        hint = (
            "e.g. http://127.0.0.1:8000/" if "://" in value else f"did you mean 'http://{value}'?"
        )
        raise ConfigError(f"url {value!r} must be http[s]://HOST[:PORT]/PATH ({hint})")
    return value


def _thresholds(name: str, value: Any) -> Any:
    items = (value,) if isinstance(value, str) else tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"a threshold is a string like 'p99<50ms', got {shown(item)}")
        try:
            _threshold.parse(item)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return items


def parse_start_at(word: str) -> float:
    """``--start-at``: unix seconds (``1765000000.5``), an ISO 8601 time with its zone
    (``2026-12-06T10:00:00Z``), or ``+TIME`` from now (``+30s``), as unix seconds. Raises
    ``DurationError`` otherwise."""
    try:
        if word.startswith("+"):
            return time.time() + parse_duration(word[1:])
        if re.fullmatch(r"[0-9]+(\.[0-9]*)?", word):
            return float(word)
        when = datetime.datetime.fromisoformat(word)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise DurationError(
            f"{word!r} is not a time like 2026-12-06T10:00:00Z, unix seconds or +30s"
        )
    return when.timestamp()


def _start_at(name: str, value: Any) -> Any:
    if value is None:
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value >= 0):
        raise ConfigError(f"start_at must be unix seconds, got {shown(value)}")
    return value


def parse_stages(word: str) -> tuple[tuple[float, float], ...]:
    """``10s:100,30s:1000,10s:0`` -> ((10.0, 100.0), (30.0, 1000.0), (10.0, 0.0)): each stage's
    duration and target. Raises ``DurationError`` (a ``ValueError``) otherwise."""
    stages = []
    for item in word.split(","):
        duration, colon, target = item.partition(":")
        try:
            if not colon:
                raise ValueError
            stages.append((parse_duration(duration), float(target)))
        except ValueError:
            raise DurationError(
                f"stage {item.strip()!r} of --stages must look like 10s:100 (a duration, "
                "then the rate or connections to reach by its end)"
            ) from None
    return tuple(stages)


def _stages(name: str, value: Any) -> Any:
    stages = tuple(value)
    if len(stages) > MAX_STAGES:
        raise ConfigError(f"stages: at most {MAX_STAGES}, got {len(stages)}")
    for stage in stages:
        numbers = isinstance(stage, tuple) and len(stage) == 2
        numbers = numbers and all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
            for x in stage
        )
        if not (numbers and stage[0] > 0 and 0 <= stage[1] <= MAX_RATE):
            raise ConfigError(
                f"a stage is (seconds > 0, a target from 0 to {MAX_RATE:,}), got {shown(stage)}"
            )
    total = sum(duration for duration, _ in stages)
    if total > MAX_SECONDS:
        raise ConfigError(f"stages must add up to at most {MAX_SECONDS:g} seconds, got {total:g}")
    return stages


def _headers(name: str, value: Any) -> Any:
    items = (value,) if isinstance(value, str) else tuple(value)
    for item in items:
        if not isinstance(item, str) or ":" not in item or not item.partition(":")[0].strip():
            raise ConfigError(f"header {item!r} must look like 'Name: value'")
    return items


def _scenario(name: str, value: Any) -> Any:
    maybe_text(name, value)
    if value is not None and value.count(":") != 1:
        raise ConfigError(f"scenario {value!r} must be module:function")
    return value


def _rate(name: str, value: Any) -> Any:
    if value is None:
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value > 0):
        raise ConfigError(f"rate must be a number of requests/s above 0, got {shown(value)}")
    if value > MAX_RATE:
        raise ConfigError(f"rate must be at most {MAX_RATE:,} requests/s, got {shown(value)}")
    return value


#: What a targets file says for each request: these options with --targets are refused.
_TARGETS_SAY = (
    ("method", "-m"),
    ("data", "--data"),
    ("data_file", "--data-file"),
    ("scenario", "--scenario"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadConfig:
    """What one ``prefork load`` run does. Raises ``ConfigError`` on a bad value."""

    url: str = option(REQUIRED, "the URL to load, http://HOST[:PORT]/PATH", _url, "url")
    connections: int = option(
        64,
        "connections kept open, over all workers",
        whole(1),
        "-c",
        "--connections",
        metavar="N",
        parse=int,
    )
    duration: float = option(
        10.0,
        "how long to run: 10s, 1m, 500ms",
        seconds(positive=True),
        "-d",
        "--duration",
        metavar="TIME",
        parse=parse_duration,
    )
    workers: int | None = option(
        None,
        "worker processes (default: the usable CPUs)",
        whole(1, optional=True),
        "-w",
        "--workers",
        metavar="N",
        parse=int,
    )
    headers: tuple[str, ...] = option(
        (),
        "a request header, 'Name: value'; repeatable",
        _headers,
        "-H",
        "--header",
        metavar="'NAME: VALUE'",
        repeat=True,
    )
    method: str = option("GET", "the request method", text, "-m", "--method", metavar="METHOD")
    data: str | None = option(None, "the request body", maybe_text, "--data", metavar="TEXT")
    data_file: str | None = option(
        None, "the request body, from a file", maybe_text, "--data-file", metavar="FILE"
    )
    timeout: float = option(
        2.0,
        "a request taking longer fails (a timeout error)",
        seconds(positive=True),
        "--timeout",
        metavar="TIME",
        parse=parse_duration,
    )
    rate: float | None = option(
        None,
        "an open loop: this many requests/s over all workers, latency measured from "
        "each request's intended send time (wrk2)",
        _rate,
        "--rate",
        metavar="R",
        parse=float,
    )
    stages: tuple[tuple[float, float], ...] = option(
        (),
        "a load shape, as k6's stages: '10s:100,30s:1000,10s:0' goes linearly to each "
        "target over its time; with --rate R, arrival rates from R (k6's "
        "ramping-arrival-rate), without, the connections from 0 (k6's ramping-vus); the run "
        f"lasts their sum (at most {MAX_STAGES} stages)",
        _stages,
        "--stages",
        metavar="TIME:N,...",
        parse=parse_stages,
    )
    targets: str | None = option(
        None,
        "the requests, from a file in vegeta's http format (METHOD URL lines, then "
        "'Name: value' headers and an @BODY-FILE line; blank lines between targets), sent "
        "in turn; every URL on URL's host",
        maybe_text,
        "--targets",
        metavar="FILE",
    )
    hdr_log: str | None = option(
        None,
        "write HdrHistogram's interval log (one line a second, microseconds) to FILE, for "
        "HdrHistogram's own tools",
        maybe_text,
        "--hdr-log",
        metavar="FILE",
    )
    json: bool = option(
        False,
        "print the result as one JSON object, the last line of stdout",
        switch,
        "--json",
        parse=None,
    )
    fail_on_error: bool = option(
        False,
        "exit 1 when any request failed (a deploy check)",
        switch,
        "--fail-on-error",
        parse=None,
    )
    scenario: str | None = option(
        None,
        "run module:function(client) in a loop on each connection instead of one request "
        "(the module is looked for in the working directory, then on sys.path)",
        _scenario,
        "--scenario",
        metavar="MODULE:FUNC",
    )

    thresholds: tuple[str, ...] = option(
        (),
        "fail the run (exit 99) unless this holds, as k6: 'p99<50ms', 'avg<10ms', "
        "'errors<0.1%%', 'rps>1000'; repeatable",
        _thresholds,
        "--threshold",
        metavar="EXPR",
        repeat=True,
    )
    insecure: bool = option(
        False,
        "https: do not check the server's certificate (a self-signed one)",
        switch,
        "-k",
        "--insecure",
        parse=None,
    )
    start_at: float | None = option(
        None,
        "start sending at this time (2026-12-06T10:00:00Z, unix seconds or +30s): "
        "several machines' runs together",
        _start_at,
        "--start-at",
        metavar="TIME",
        parse=parse_start_at,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.stages:  # the run lasts the stages; a closed loop's connections are theirs
            object.__setattr__(self, "duration", sum(d for d, _ in self.stages))
            if self.rate is None:
                targets = [target for _, target in self.stages]
                if not all(target == int(target) for target in targets) or max(targets) < 1:
                    raise ConfigError(
                        "--stages without --rate ramps connections: whole numbers, at least "
                        "one of them 1 or more (or give --rate R for arrival rates from R)"
                    )
                object.__setattr__(self, "connections", int(max(targets)))
        if self.data is not None and self.data_file is not None:
            raise ConfigError("give --data or --data-file, not both")
        if self.data_file is not None and not os.path.isfile(self.data_file):
            raise ConfigError(f"--data-file {self.data_file!r} is not a readable file")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LoadConfig:
        if "url" not in options:
            raise ConfigError("no URL given; name the URL to load, e.g. http://127.0.0.1:8000/")
        if "targets" in options:
            given = [flag for name, flag in _TARGETS_SAY if name in options]
            if given:
                raise ConfigError(
                    f"give --targets or {', '.join(given)}, not both: the targets file says "
                    "each request"
                )
        if "stages" in options and "duration" in options:
            raise ConfigError("give -d or --stages, not both: the run lasts the stages' sum")
        if "stages" in options and "connections" in options and "rate" not in options:
            raise ConfigError(
                "give -c or --stages without --rate, not both: the stages say the connections"
            )
        return build(cls, "load", options)

    def body(self) -> bytes | None:
        """The request body (``--data`` as UTF-8, or ``--data-file``'s bytes), or None."""
        if self.data_file is not None:
            with open(self.data_file, "rb") as file:
                return file.read()
        return None if self.data is None else self.data.encode()

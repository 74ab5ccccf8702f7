"""Option declarations: one place per option gives the check, the default and the flags."""

from __future__ import annotations

import dataclasses

import pytest

from prefork import ConfigError
from prefork._serve_command import SERVE_CONFIGS
from prefork.config import BrokerConfig, MasterConfig, policy_of
from prefork.core._options import (
    MAX_SECONDS,
    build,
    declared,
    maybe_text,
    one_of,
    path_or_none,
    seconds,
    strings,
    switch,
    text,
    whole,
)
from prefork.http import HTTPConfig
from prefork.master._watch import ReloadConfig


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (seconds(), -1, "x must be a number of seconds >= 0, got -1"),
        (seconds(positive=True), 0, "x must be a number of seconds > 0, got 0"),
        (seconds(), float("inf"), "x must be a number of seconds >= 0, got inf"),
        (seconds(), None, "x must be a number of seconds >= 0, got None"),
        (whole(1), 0, "x must be a whole number >= 1, got 0"),
        (whole(0), True, "x must be a whole number >= 0, got True"),
        (whole(0), None, "x must be a whole number >= 0, got None"),
        (whole(1, 10), 11, "x must be at most 10, got 11"),
        (seconds(), 604801, "x must be at most 604800 seconds, got 604801"),
        (seconds(), 10**400, "x must be at most 604800 seconds, got 1" + "0" * 56 + "..."),
        (seconds(maximum=60), 60.5, "x must be at most 60 seconds, got 60.5"),
        (one_of("a"), "b" * 100, "x must be one of a, got '" + "b" * 56 + "..."),
        (switch, 1, "x must be True or False, got 1"),
        (one_of("a", "b"), "c", "x must be one of a, b, got 'c'"),
        (text, 3, "x must be a string, got 3"),
        (maybe_text, 3, "x must be a string, got 3"),
        (path_or_none, "", "x must be a path string, got ''"),
        (path_or_none, 3, "x must be a path string, got 3"),
        (strings, [1], "x must be a list of strings, got [1]"),
        (strings, "a,b", None),
    ],
)
def test_each_check_refuses_with_one_line(check, value, message) -> None:  # type: ignore[no-untyped-def]
    if message is None:
        assert check("x", value) == (value,)
        return
    with pytest.raises(ConfigError) as info:
        check("x", value)
    assert str(info.value) == message


def test_a_number_too_long_to_print_is_named_so() -> None:
    with pytest.raises(ConfigError) as info:
        whole(0, 5)("x", 10**5000)
    assert str(info.value) == "x must be at most 5, got a number too long to print"


def test_the_bounds_themselves_are_allowed() -> None:
    assert whole(1, 10)("x", 10) == 10
    assert seconds()("x", MAX_SECONDS) == MAX_SECONDS == 7 * 24 * 3600


def test_optional_checks_let_none_through() -> None:
    assert seconds(optional=True)("x", None) is None
    assert whole(1, optional=True)("x", None) is None
    assert path_or_none("x", None) is None


def test_build_names_the_unknown_option_and_lists_the_known() -> None:
    with pytest.raises(ConfigError, match=r"unknown Master option 'graceful'; known options: gr"):
        build(MasterConfig, "Master", {"graceful": 1})


def test_every_option_is_declared_with_help_and_every_flag_is_unique() -> None:
    flags: list[str] = []
    for config in (MasterConfig, BrokerConfig, HTTPConfig, ReloadConfig):
        for f, meta in declared(config):
            assert meta.help, f.name
            flags += meta.flags
    assert len(flags) == len(set(flags))
    names = {c.__name__ for c in SERVE_CONFIGS}
    assert names == {"MasterConfig", "BrokerConfig", "HTTPConfig", "ReloadConfig"}


def test_configs_are_built_by_keyword_only() -> None:
    for config in (MasterConfig, BrokerConfig, HTTPConfig, ReloadConfig):
        assert all(f.kw_only for f in dataclasses.fields(config)), config.__name__
    with pytest.raises(TypeError):
        MasterConfig(30.0)  # type: ignore[misc]


def test_policy_takes_the_masters_graceful_timeout_unless_the_broker_has_its_own() -> None:
    master = MasterConfig(graceful_timeout=7.0, backoff_base=0.25)
    inherits = policy_of(BrokerConfig(type="web", worker="m:W"), master)
    own = policy_of(BrokerConfig(type="web", worker="m:W", graceful_timeout=2.0), master)
    assert (inherits.graceful_timeout, own.graceful_timeout) == (7.0, 2.0)
    assert inherits.backoff_base == 0.25
    assert inherits.workers == BrokerConfig(type="x", worker="m:W").workers  # the declared default

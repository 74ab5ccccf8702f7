"""Option validation: every bad value is a one-line ConfigError saying what to do."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from prefork import ConfigError, Master, Worker
from prefork.config import BrokerConfig, MasterConfig, policy_of
from prefork.core._options import counts
from prefork.master._child import check_worker


class Nop(Worker):
    pass


def test_defaults() -> None:
    c = MasterConfig()
    assert c.graceful_timeout == 30.0 and c.pidfile is None


def test_unknown_master_option_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown Master option 'gracefull_timeout'; known"):
        Master(gracefull_timeout=3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"graceful_timeout": -1}, "graceful_timeout must be a number of seconds >= 0"),
        ({"graceful_timeout": "3"}, "graceful_timeout must be a number"),
        ({"graceful_timeout": float("nan")}, "graceful_timeout must be a number"),
        ({"graceful_timeout": True}, "graceful_timeout must be a number"),
        ({"backoff_base": 0}, "backoff_base must be a number of seconds > 0"),
        ({"max_frame": 10}, "max_frame must be a whole number >= 64"),
        ({"umask": 0o1000}, r"umask must be at most 0o777 \(octal, e.g. 027\), got 0o1000"),
        ({"umask": -1}, "umask must be a whole number >= 0"),
        ({"pidfile": 3}, "pidfile must be a path string"),
        ({"control": ""}, "control must be a path string"),
        ({"metrics_bind": ""}, "metrics_bind must be an address such as 127.0.0.1:9100"),
        ({"metrics_bind": 9100}, "metrics_bind must be an address"),
        ({"metrics_bind": "fd://3"}, "metrics_bind takes host:port or unix:PATH, not 'fd://3'"),
        ({"metrics_bind": "nowhere"}, "metrics_bind: bad address 'nowhere': no valid port"),
    ],
)
def test_bad_master_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Master(**options)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": -1}, "workers must be a whole number >= 0"),
        ({"workers": 1.5}, "workers must be a whole number"),
        ({"recycle_rate": -5}, "recycle_rate must be"),
        ({"timeout": -1}, "timeout must be"),
        ({"boot_timeout": 0}, "boot_timeout must be a number of seconds > 0"),
        ({"graceful_timeout": -2}, "graceful_timeout must be"),
        ({"backlog": 0}, "backlog must be a whole number >= 1"),
        ({"listen": [3]}, "listen must be a list of strings"),
        ({"listen": ["nowhere"]}, "bad address 'nowhere'"),
        ({"max_worker_memory": -1}, "max_worker_memory must be a number of MiB >= 0"),
        ({"max_worker_memory": True}, "max_worker_memory must be a number of MiB"),
        ({"max_worker_memory": float("inf")}, "max_worker_memory must be a number of MiB"),
        ({"max_worker_memory": 2**20 + 1}, "max_worker_memory must be at most 1048576 MiB"),
        ({"max_worker_memory": 10**400}, "max_worker_memory must be at most 1048576 MiB"),
        ({"workers": 1025}, "workers must be at most 1024, got 1025"),
        ({"backlog": 65536}, "backlog must be at most 65535, got 65536"),
        ({"timeout": 10**30}, "timeout must be at most 604800 seconds"),
        ({"template": True, "preload": True}, "template and preload both share"),
        ({"template": "off", "refork_after": 50}, "refork_after promotes a worker to the next"),
        (
            {"preload": True, "refork_after": 50},
            "add --template auto or on .template=.auto. or True.,",
        ),
        ({"refork_after": 50}, "add --template auto or on"),  # off by default
        ({"template": "yes"}, "template must be auto, on or off .True and False mean on and off"),
        ({"template": 1}, "template must be auto, on or off"),
        ({"template": "on", "preload": True}, "template and preload both share"),
        ({"template": True, "refork_after": 0}, "refork_after must be request counts >= 1"),
        ({"template": True, "refork_after": [5, "x"]}, "refork_after must be request counts"),
        ({"template": True, "refork_after": True}, "refork_after must be request counts"),
    ],
)
def test_bad_broker_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Master().broker("web", Nop, **kwargs)  # type: ignore[arg-type]


def test_broker_options_and_extra_worker_options() -> None:
    b = Master(graceful_timeout=5).broker("web", Nop, workers=3, recycle_rate=60, app="x:y")
    assert (b.type, b.workers, b.recycle_rate, b.draining) == ("web", 3, 60, False)
    assert dict(b.config.worker_options) == {"app": "x:y"}
    assert BrokerConfig(type="w", worker=Nop, listen=["127.0.0.1:1"]).listen == ("127.0.0.1:1",)


def test_refork_after_is_a_count_or_a_list_of_counts_on_the_api_and_the_command_line() -> None:
    m = Master()
    assert m.broker("a", Nop, template=True, refork_after=50).config.refork_after == (50,)
    b = m.broker("b", Nop, template=True, refork_after=[50, 100, 1000])
    assert b.config.refork_after == (50, 100, 1000)
    assert m._policies["b"].refork_after == (50, 100, 1000)
    assert counts("50,100,1000") == (50, 100, 1000)
    with pytest.raises(ValueError):
        counts("50,x")


class Prepares(Worker):
    @classmethod
    def prepare_template(cls, options: Mapping[str, Any]) -> None:
        pass


def test_template_is_auto_on_or_off_and_true_false_mean_on_off() -> None:
    m = Master()
    assert m.broker("a", Nop).config.template == "off"  # the default: no templates
    assert m.broker("a2", Nop, template="auto").config.template == "auto"
    assert m.broker("b", Nop, template=True).config.template == "on"
    assert m.broker("c", Nop, template=False).config.template == "off"
    assert m.broker("d", Nop, template="off").config.template == "off"
    assert m.broker("e", Nop, template="auto", preload=True).config.template == "auto"


@pytest.mark.parametrize(
    ("worker", "options", "used"),
    [
        # auto: a template only where it imports something, and never with preload
        (Prepares, {"template": "auto"}, (True, True)),
        (Prepares, {}, (False, False)),  # the default is off
        ("prefork.http:HTTPWorker", {"template": "auto"}, (False, False)),  # not imported: unknown
        ("prefork.http:HTTPWorker", {"template": True}, (True, False)),
        (Nop, {"template": "auto"}, (False, False)),  # nothing to import in one: a process more
        (Nop, {"template": "auto", "refork_after": 10}, (True, True)),  # refork wants templates
        (Prepares, {"template": "auto", "preload": True}, (False, False)),  # preload decides
        # on: always, even for a worker that imports nothing; off: never
        (Nop, {"template": "on"}, (True, False)),
        (Prepares, {"template": True}, (True, False)),
        (Prepares, {"template": "off"}, (False, False)),
    ],
)
def test_which_brokers_use_templates(
    worker: type[Worker] | str, options: dict[str, Any], used: tuple[bool, bool]
) -> None:
    m = Master()
    m.broker("web", worker, **options)
    policy = m._policies["web"]
    assert (policy.template, policy.template_fallback) == used


def test_template_choices_say_what_each_broker_gets() -> None:
    m = Master()
    m.broker("a", Prepares, template="auto")
    m.broker("b", Nop, template="auto")
    m.broker("c", Prepares, template=True)
    m.broker("d", Prepares)
    m.broker("e", Prepares, template="auto", preload=True)
    m.broker("f", "prefork.http:HTTPWorker", app="hello:app", template="auto")
    assert m.template_choices() == {
        "a": "template auto: a template per generation, unless its import leaves threads or "
        "sockets open (then that generation's workers import the code themselves)",
        "b": "template auto: no templates (the worker imports nothing in one); workers import "
        "the code",
        "c": "template on: a template per generation, whatever its import leaves running",
        "d": "template off: no templates (--template off); workers import the code",
        "e": "template auto: no templates (--preload); workers import the code",
        "f": "template auto: no templates (the worker imports nothing in one); workers import "
        "the code",
    }


def test_listen_as_a_single_string_is_one_address() -> None:
    b = Master().broker("web", Nop, listen="127.0.0.1:0")  # type: ignore[arg-type]
    assert b.config.listen == ("127.0.0.1:0",)


def test_bad_broker_names_and_duplicates() -> None:
    m = Master()
    with pytest.raises(ConfigError, match="broker type 'a b' must be"):
        m.broker("a b", Nop)
    m.broker("web", Nop)
    with pytest.raises(ConfigError, match="declared twice"):
        m.broker("web", Nop)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (42, "worker must be a Worker subclass or 'module:attr'"),
        (object, "worker must be a Worker subclass"),
        ("nocolon", "must look like 'package.module:ClassName'"),
        ("mod:not an attr", "must look like"),
        ("no_such_module_xyz:W", "no module named 'no_such_module_xyz'"),
        ("no_such_pkg_xyz.sub:W", "cannot be imported: No module named 'no_such_pkg_xyz'"),
        (".relative:W", "must look like"),
    ],
)
def test_worker_specs_that_cannot_work(spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Master().broker("web", spec)  # type: ignore[arg-type]


def test_worker_spec_is_located_not_imported() -> None:
    import sys

    sys.modules.pop("json.tool", None)
    check_worker("json.tool:Main", {})  # found; what it names is checked after fork
    assert "json.tool" not in sys.modules
    check_worker(Nop, {})


def test_a_worker_class_checks_its_options_before_anything_forks() -> None:
    class Picky(Worker):
        @classmethod
        def check_options(cls, options: object) -> None:
            raise ConfigError(f"Picky refuses {sorted(options)}")

    with pytest.raises(ConfigError, match=re.escape("Picky refuses ['colour']")):
        Master().broker("web", Picky, workers=2, colour="red")


def test_unknown_event_lists_the_known_ones() -> None:
    b = Master().broker("web", Nop)
    with pytest.raises(ValueError, match="unknown event 'worker_died'; known events: worker_exit"):
        b.on("worker_died", print)
    assert b.on("worker_exit", print) is print


def test_scale_takes_a_count() -> None:
    b = Master().broker("web", Nop)
    with pytest.raises(ConfigError, match="scale takes a whole number from 0 to 1024, got -1"):
        b.scale(-1)
    with pytest.raises(ConfigError, match="got a number too long to print"):
        b.scale(10**5000)
    with pytest.raises(ConfigError, match="got 1025"):
        b.scale(1025)


def test_run_without_brokers_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no brokers"):
        Master().run()


def test_a_master_that_cannot_bind_removes_its_own_pidfile(tmp_path: Path) -> None:
    pidfile = tmp_path / "prefork.pid"
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        master = Master(pidfile=str(pidfile))
        master.broker("web", Nop, listen=[f"127.0.0.1:{holder.getsockname()[1]}"])
        with pytest.raises(ConfigError, match="address already in use"):
            master.run()
    finally:
        holder.close()
    assert not pidfile.exists()


def test_control_off_is_none_and_memory_is_given_in_mib() -> None:
    assert MasterConfig(control="off").control is None
    assert MasterConfig(control="auto").control == "auto"
    broker = BrokerConfig(type="web", worker="app:W", max_worker_memory=1.5)
    assert policy_of(broker, MasterConfig()).max_memory == 3 << 19

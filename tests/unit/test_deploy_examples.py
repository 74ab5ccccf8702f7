"""The deployment examples (``examples/deploy/``) say what prefork takes: every flag they pass
is one ``prefork serve`` parses, the probes and the Service reach the ports the flags bind, and
each supervisor's kill comes after prefork's own stop (``--shutdown-delay`` +
``--graceful-timeout``). Defaults are read from prefork's option declarations, so a changed
default is checked too. ``tests/process/test_deploy_check_config.py`` runs
``prefork serve --check-config`` on the same arguments (values and the app)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from deploy_examples import (
    SERVICE,
    SOCKET,
    container_port,
    deployments,
    dockerfile_comments,
    dockerfile_instructions,
    dockerfile_last,
    image_command,
    k8s_objects,
    pod_command,
    pod_container,
    serve_args,
    service_command,
    systemd_seconds,
    unit_file,
    unit_value,
)

from prefork import _serve_command, cli
from prefork.core._options import Option, declared

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["Dockerfile", "k8s.yaml", "prefork.service"]
CONTAINERS = ["Dockerfile", "k8s.yaml"]
#: Every way of naming a socket for the app: with socket activation, none may be given.
BIND_FLAGS = ("--bind", "--host", "--port", "--uds", "--fd")


def declaration(flag: str) -> tuple[dataclasses.Field[Any], Option]:
    """The option behind a ``prefork serve`` flag, from its one declaration."""
    for config in (*_serve_command.SERVE_CONFIGS, _serve_command.ServeOptions):
        for f, meta in declared(config):
            if flag in meta.flags:
                return f, meta
    raise AssertionError(f"prefork serve has no {flag}")


def parse(*argv: str) -> argparse.Namespace:
    """``prefork ARGV`` through prefork's own parser; its error line when it refuses them."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return cli.build_parser().parse_args(argv)
        except SystemExit:
            pass
    raise AssertionError(f"prefork refuses {list(argv)}: {err.getvalue().strip()}")


def setting(args: list[str], flag: str) -> Any:
    """What ``prefork serve ARGS`` sets ``flag`` to: the value given, else the declared
    default."""
    f, _ = declaration(flag)
    return getattr(parse("serve", *args), f.name, f.default)


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def stop_takes(args: list[str]) -> float:
    """The longest a stop by SIGTERM takes: serving on for --shutdown-delay, then the workers'
    --graceful-timeout before prefork SIGKILLs them."""
    return float(setting(args, "--shutdown-delay") + setting(args, "--graceful-timeout"))


# --- (a) the flags ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_flag_is_one_prefork_serve_takes(name: str) -> None:
    parse("serve", *deployments()[name])


def test_the_check_names_a_flag_prefork_does_not_take() -> None:
    with pytest.raises(AssertionError, match="unknown flag --health-bnd"):
        parse("serve", "hello:app", "--health-bnd", "0.0.0.0:8001")


@pytest.mark.parametrize("name", CONTAINERS)
def test_a_container_has_a_health_port_and_a_shutdown_delay(name: str) -> None:
    args = deployments()[name]
    assert setting(args, "--health-bind") is not None
    assert setting(args, "--shutdown-delay") > 0


@pytest.mark.parametrize("name", NAMES)
def test_sigterm_stops_prefork_in_every_deployment(name: str) -> None:
    """Docker, the kubelet and systemd stop with SIGTERM: a drain would leave the master up
    until their SIGKILL."""
    assert setting(deployments()[name], "--sigterm") in ("stop", "auto")


@pytest.mark.parametrize("name", CONTAINERS)
def test_a_container_listens_on_every_address(name: str) -> None:
    """Traffic and probes come to the pod's or container's address, not to 127.0.0.1."""
    args = deployments()[name]
    (bind,) = setting(args, "--bind")
    for address in (bind, setting(args, "--health-bind")):
        assert host_port(address)[0] in ("0.0.0.0", "::"), address


# --- the Dockerfile ------------------------------------------------------------------------


def test_the_image_is_a_slim_python() -> None:
    assert re.fullmatch(r"python:3\.1[23]-slim(-\w+)?", dockerfile_last("FROM"))


def test_the_image_runs_as_a_user_it_made_other_than_root() -> None:
    user = dockerfile_last("USER").partition(":")[0]
    assert user not in ("root", "0")
    made = [rest for kw, rest in dockerfile_instructions() if kw == "RUN" and "useradd" in rest]
    assert made and f"--uid {user}" in made[-1]


def test_the_image_runs_prefork_serve_itself_as_pid_1() -> None:
    """Exec form (JSON arrays, no shell in between), so prefork gets docker's SIGTERM."""
    assert image_command()[:2] == ["prefork", "serve"]


def test_the_image_holds_the_app_it_serves() -> None:
    module = deployments()["Dockerfile"][0].partition(":")[0]
    workdir = dockerfile_last("WORKDIR").rstrip("/")
    copied = [rest.split() for kw, rest in dockerfile_instructions() if kw == "COPY"]
    sources = [words[:-1] for words in copied if words[-1].rstrip("/") == workdir]
    assert [f"examples/{module}.py"] in sources
    assert (ROOT / "examples" / f"{module}.py").is_file()


def test_the_image_exposes_and_checks_the_ports_prefork_binds() -> None:
    args = deployments()["Dockerfile"]
    (bind,) = setting(args, "--bind")
    health = host_port(setting(args, "--health-bind"))[1]
    assert {host_port(bind)[1], health} <= {int(p) for p in dockerfile_last("EXPOSE").split()}
    command = json.loads(dockerfile_last("HEALTHCHECK").partition(" CMD ")[2])  # exec form
    (url,) = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(command))
    assert (int(url[0]), url[1]) in ((health, "/readyz"), (health, "/livez"))


def test_docker_s_stop_timeout_outlasts_prefork_s_stop() -> None:
    """Docker SIGKILLs 10 s after SIGTERM unless told otherwise: the run line tells it."""
    (timeout,) = re.findall(r"--stop-timeout (\d+)", dockerfile_comments())
    assert int(timeout) > stop_takes(deployments()["Dockerfile"])


# --- (b), (c) Kubernetes -------------------------------------------------------------------


def test_the_probes_ask_the_health_port_for_readyz_and_livez() -> None:
    container = pod_container(k8s_objects()["Deployment"])
    health = host_port(setting(deployments()["k8s.yaml"], "--health-bind"))[1]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        get = container[probe]["httpGet"]
        assert get.get("scheme", "HTTP") == "HTTP"
        assert (get["path"], container_port(container, get["port"])) == (path, health)


def test_the_service_sends_traffic_to_the_app_s_port() -> None:
    objects = k8s_objects()
    deployment, service = objects["Deployment"], objects["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (bind,) = setting(deployments()["k8s.yaml"], "--bind")
    container = pod_container(deployment)
    (port,) = service["spec"]["ports"]
    assert container_port(container, port["targetPort"]) == host_port(bind)[1]


def test_the_pod_s_grace_period_outlasts_prefork_s_stop() -> None:
    spec = k8s_objects()["Deployment"]["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > stop_takes(deployments()["k8s.yaml"])


def test_the_pod_command_is_the_image_s_entrypoint_with_args_for_its_cmd() -> None:
    container = {"args": ["hello:app", "--workers", "3"]}
    assert pod_command(container) == ["prefork", "serve", "hello:app", "--workers", "3"]
    assert pod_command({}) == image_command()
    assert pod_command({"command": ["prefork", "serve"]}) == ["prefork", "serve"]
    assert serve_args(pod_command({})) == deployments()["Dockerfile"]


# --- (d) systemd ---------------------------------------------------------------------------


def test_the_service_is_type_notify_and_signals_the_master_only() -> None:
    service = unit_file(SERVICE)
    assert unit_value(service, "Service", "Type") == "notify"
    assert unit_value(service, "Service", "KillMode") == "mixed"


def test_the_service_serves_the_socket_systemd_binds() -> None:
    """No bind flag: prefork takes systemd's LISTEN_FDS only when none is given."""
    service, socket_unit = unit_file(SERVICE), unit_file(SOCKET)
    assert SOCKET.stem == SERVICE.stem  # or the socket unit would need Service=
    assert SOCKET.name in unit_value(service, "Unit", "Requires").split()
    assert SOCKET.name in unit_value(service, "Unit", "After").split()
    namespace = vars(parse("serve", *deployments()["prefork.service"]))
    assert [flag for flag in BIND_FLAGS if declaration(flag)[0].name in namespace] == []
    assert unit_value(socket_unit, "Socket", "Accept") in ("no", "false")
    (bind,) = setting(deployments()["Dockerfile"], "--bind")
    listen = unit_value(socket_unit, "Socket", "ListenStream")
    assert int(listen.rpartition(":")[2]) == host_port(bind)[1]  # port 8000 everywhere


def test_systemd_s_timeouts_outlast_prefork_s() -> None:
    service = unit_file(SERVICE)
    args = deployments()["prefork.service"]
    assert systemd_seconds(unit_value(service, "Service", "TimeoutStopSec")) > stop_takes(args)
    start = systemd_seconds(unit_value(service, "Service", "TimeoutStartSec"))
    assert start > setting(args, "--boot-timeout")  # READY=1 waits for the workers' start


def test_reload_waits_on_prefork_ctl_at_the_master_s_control_socket() -> None:
    service = unit_file(SERVICE)
    start, reload = service_command(service, "ExecStart"), service_command(service, "ExecReload")
    assert reload[0] == start[0] and reload[1] == "ctl"
    ctl = parse(*reload[1:])
    assert ctl.action in ("reload", "upgrade") and ctl.wait
    control = setting(serve_args(start), "--control")
    assert ctl.control == control
    runtime = unit_value(service, "Service", "RuntimeDirectory")
    assert Path(control).parent == Path("/run") / runtime


def test_systemd_time_spans() -> None:
    assert [systemd_seconds(t) for t in ("45", "45s", "1min 30s", "500ms", "2h")] == [
        45,
        45,
        90,
        0.5,
        7200,
    ]
    with pytest.raises(AssertionError, match="not a time span"):
        systemd_seconds("infinity")

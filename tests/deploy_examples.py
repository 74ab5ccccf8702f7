"""Readers for the deployment examples in ``examples/deploy/``, shared by their unit test
(``tests/unit/test_deploy_examples.py``: flags, ports, paths and timeouts) and their process
test (``tests/process/test_deploy_check_config.py``: ``prefork serve --check-config``).

Importable from both because ``tests/`` holds the root ``conftest.py``, which puts it on
``sys.path``. Each reader takes only what these files use and fails loudly on the rest,
rather than guessing what a Dockerfile or unit file meant.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "examples" / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s.yaml"
SERVICE = DEPLOY / "prefork.service"
SOCKET = DEPLOY / "prefork.socket"


# --- Dockerfile ----------------------------------------------------------------------------


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` in order, continuation lines joined, comments left out."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or (not pending and not line.strip()):
            continue  # as Docker does, within a continued line too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        out.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    assert not pending, f"{path.name} ends inside a continued line"
    return out


def dockerfile_comments(path: Path = DOCKERFILE) -> str:
    """The text of every comment line, joined."""
    lines = path.read_text().splitlines()
    return "\n".join(line.lstrip()[1:] for line in lines if line.lstrip().startswith("#"))


def dockerfile_last(keyword: str, path: Path = DOCKERFILE) -> str:
    """The arguments of the last ``keyword`` instruction (the one in effect)."""
    found = [rest for kw, rest in dockerfile_instructions(path) if kw == keyword]
    assert found, f"{path.name} has no {keyword}"
    return found[-1]


def exec_form(keyword: str, path: Path = DOCKERFILE) -> list[str]:
    """The JSON array of an ENTRYPOINT or CMD; an AssertionError for the shell form."""
    text = dockerfile_last(keyword, path)
    try:
        words = json.loads(text)
    except json.JSONDecodeError:
        words = None
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), (
        f"{path.name}: {keyword} must be in exec form (a JSON array of strings), got {text}"
    )
    return words


def image_command() -> list[str]:
    """What the image runs: ENTRYPOINT then CMD."""
    return [*exec_form("ENTRYPOINT"), *exec_form("CMD")]


# --- Kubernetes ----------------------------------------------------------------------------


def k8s_objects(path: Path = K8S) -> dict[str, dict[str, Any]]:
    """The YAML documents by kind (one of each)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    kinds = [d["kind"] for d in docs]
    assert len(set(kinds)) == len(kinds), f"{path.name}: one object of each kind, got {kinds}"
    return {d["kind"]: d for d in docs}


def pod_container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Deployment's one container."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def pod_command(container: dict[str, Any]) -> list[str]:
    """What the container runs: ``command`` replaces the image's ENTRYPOINT, ``args`` its CMD
    (and ``command`` alone drops the CMD), as Kubernetes does."""
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    args = container["args"] if "args" in container else exec_form("CMD")
    return [*exec_form("ENTRYPOINT"), *args]


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or a Service's port: a number, or the name of one of the container's."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    assert port in named, f"no container port named {port!r} (there are {sorted(named)})"
    return named[port]  # type: ignore[no-any-return]


# --- systemd -------------------------------------------------------------------------------


def unit_file(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's ``[Section] Key=value`` lines: every value of each key, in order
    (systemd allows a key more than once); ``\\`` continues a line, as systemd reads it."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped[:1] in ("#", ";") or (not pending and not stripped):
            continue  # as systemd does, within a continued line too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        stripped, pending = pending + stripped, ""
        if stripped.startswith("["):
            current = sections.setdefault(stripped.strip("[]"), {})
            continue
        key, sep, value = stripped.partition("=")
        assert sep and current is not None, f"{path.name}: not a Key=value line: {stripped!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_value(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    """The value in effect (the last one) of ``key``."""
    values = unit.get(section, {}).get(key)
    assert values, f"no {key}= in [{section}]"
    return values[-1]


_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, None: 1}


def systemd_seconds(text: str) -> float:
    """A systemd time span (``45``, ``45s``, ``1min 30s``) in seconds."""
    parts = _SPAN.findall(text)
    assert parts and "".join(_SPAN.sub("", text).split()) == "", f"not a time span: {text!r}"
    return sum(float(number) * _UNIT_SECONDS[unit or None] for number, unit in parts)


def service_command(service: dict[str, dict[str, list[str]]], key: str) -> list[str]:
    """``ExecStart=`` or ``ExecReload=`` as words (systemd's quoting is the shell's here)."""
    words = shlex.split(unit_value(service, "Service", key))
    assert words and words[0][:1] not in "-@:+!", f"{key}: no prefixes expected, got {words}"
    return words


# --- every deployment ----------------------------------------------------------------------


def serve_args(command: list[str]) -> list[str]:
    """The arguments of ``prefork serve`` in a command (``prefork`` may be a path to it)."""
    assert len(command) >= 2 and Path(command[0]).name == "prefork", command
    assert command[1] == "serve", f"expected `prefork serve ...`, got {command}"
    return command[2:]


def deployments() -> dict[str, list[str]]:
    """Each example's ``prefork serve`` arguments, by the file that gives them."""
    deployment = k8s_objects()["Deployment"]
    service = unit_file(SERVICE)
    return {
        "Dockerfile": serve_args(image_command()),
        "k8s.yaml": serve_args(pod_command(pod_container(deployment))),
        "prefork.service": serve_args(service_command(service, "ExecStart")),
    }

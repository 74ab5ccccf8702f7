"""The health probes the master answers itself: what /readyz says in each phase and state,
the answers on the metrics endpoint and on --health-bind, and the console that binds them."""

from __future__ import annotations

import json
import selectors
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_console import FakeMaster, host, worker_row
from test_control import pump

from prefork.config import MasterConfig
from prefork.ops._console import Console
from prefork.ops._health import readiness, readyz_body
from prefork.ops._metrics_http import HealthEndpoint, answer


def broker(*states: str, draining: bool = False, desired: int = 2) -> dict[str, Any]:
    rows = [worker_row(i + 1, state) for i, state in enumerate(states)]
    return {"draining": draining, "desired": desired, "workers": rows}


def test_ready_when_every_listening_broker_has_a_ready_worker() -> None:
    status: Any = {"http": broker("booting", "ready"), "jobs": broker()}
    assert readiness("serving", status, ["http"]) == {}  # jobs listens on nothing: not counted
    assert readiness("serving", status, ["http", "jobs"]) == {"jobs": "no worker ready"}


@pytest.mark.parametrize(
    ("phase", "state", "why"),
    [
        ("serving", broker("booting"), "no worker ready"),
        ("serving", broker("ready", draining=True), "drained"),
        ("serving", broker(desired=0), "scaled to 0"),
        ("shutting down", broker("ready"), "shutting down (--shutdown-delay)"),
        ("stopping", broker("ready"), "stopping"),
    ],
)
def test_not_ready_says_which_broker_and_why(phase: str, state: Any, why: str) -> None:
    assert readiness(phase, {"http": state}, ["http"]) == {"http": why}


def test_the_readyz_body_is_one_json_line() -> None:
    assert readyz_body({}) == b'{"ready":true}\n'
    body = readyz_body({"http": "drained"})
    assert json.loads(body) == {"ready": False, "brokers": {"http": "drained"}}


def render() -> list[str]:
    return ["x 1\n"]


@pytest.mark.parametrize(
    ("head", "reasons", "start", "body"),
    [
        (b"GET /livez HTTP/1.1", {"http": "x"}, b"HTTP/1.1 200 OK", b"ok\n"),  # alive anyway
        (b"GET /readyz HTTP/1.1", {}, b"HTTP/1.1 200 OK", b'{"ready":true}\n'),
        (
            b"GET /readyz?verbose HTTP/1.0",
            {"http": "drained"},
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json",
            b'{"ready":false,"brokers":{"http":"drained"}}\n',
        ),
    ],
)
def test_the_probes_on_the_metrics_endpoint(
    head: bytes, reasons: dict[str, str], start: bytes, body: bytes
) -> None:
    first, rest = answer(head, render, lambda: reasons)
    assert rest is None and first.startswith(start) and first.endswith(b"\r\n\r\n" + body)


def test_the_health_endpoint_has_the_probes_and_no_metrics() -> None:
    first, _ = answer(b"GET /metrics HTTP/1.1", None, dict)
    assert first.startswith(b"HTTP/1.1 404 Not Found")
    assert first.endswith(b"prefork health: GET /livez, /readyz\n")
    first, _ = answer(b"GET / HTTP/1.1", render, dict)
    assert first.endswith(b"prefork metrics: GET /metrics, /livez, /readyz\n")
    head, _ = answer(b"HEAD /readyz HTTP/1.1", None, dict)
    assert head.endswith(b"content-length: 15\r\nconnection: close\r\n\r\n")


@pytest.fixture
def selector() -> Iterator[selectors.DefaultSelector]:
    with selectors.DefaultSelector() as sel:
        yield sel


def fetch(sel: selectors.BaseSelector, address: Any, path: str) -> bytes:
    with socket.create_connection(address, timeout=2) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\n\r\n".encode())
        data = b""
        while True:
            pump(sel)
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_the_console_serves_the_probes_on_health_bind(
    tmp_path: Path, selector: selectors.DefaultSelector
) -> None:
    master = FakeMaster()  # its broker "http": worker 1 ready, worker 2 booting
    phase = ["serving"]
    made = Console(MasterConfig(health_bind="127.0.0.1:0"), master.posted.append, host())
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    made.open(selector, master.status, {"http": [listener], "jobs": []}, None, lambda: phase[0])
    assert made.describe().startswith("health http://127.0.0.1:")
    assert made._health is not None
    address = made._health.listener.getsockname()
    assert fetch(selector, address, "/readyz").endswith(b'{"ready":true}\n')
    phase[0] = "shutting down"
    reply = fetch(selector, address, "/readyz")
    assert reply.startswith(b"HTTP/1.1 503 ")
    assert reply.endswith(
        b'{"ready":false,"brokers":{"http":"shutting down (--shutdown-delay)"}}\n'
    )
    assert fetch(selector, address, "/livez").endswith(b"\r\n\r\nok\n")
    assert isinstance(made._health, HealthEndpoint) and made._health.NAME == "health endpoint"
    made.close()
    listener.close()

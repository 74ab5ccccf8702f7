"""``LoadWorker`` without forking: its share of the connections, a report a second, the last
report and ``done`` at the end or when stopped early, and a failed driver said once."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import uvloop

from prefork.core._options import ConfigError
from prefork.load import LoadConfig
from prefork.load._worker import LoadWorker


class Channel:
    def __init__(self) -> None:
        self.frames: list[tuple[str, Any]] = []

    def send_frame(self, kind: str, body: Any = None) -> None:
        self.frames.append((kind, body))


def refused_url() -> tuple[socket.socket, str]:
    """A port that refuses connections (bound, not listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}/"


def worker(channel: Channel, **options: Any) -> LoadWorker:
    return LoadWorker(type="load", id=2, generation=1, sockets=[], options=options, channel=channel)


@pytest.mark.parametrize(
    ("options", "message"),
    [({}, "needs load=LoadConfig"), ({"load": LoadConfig(url="http://x/"), "parts": 0}, "parts")],
)
def test_options_are_checked_before_forking(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LoadWorker.check_options(options)


@pytest.mark.parametrize(
    ("rate", "stages"),
    [(None, ()), (50.0, ()), (50.0, ((1.2, 100.0),)), (None, ((0.6, 3.0), (0.6, 0.0)))],
)
def test_a_run_reports_each_second_then_says_it_is_done(
    rate: float | None, stages: tuple[tuple[float, float], ...]
) -> None:
    sock, url = refused_url()
    channel = Channel()

    async def main() -> None:
        config = LoadConfig(
            url=url, connections=3, duration=1.2, rate=rate, timeout=0.5, stages=stages
        )
        w = worker(channel, load=config, parts=2)  # id 2 of 2: one connection of three
        await w.init()
        await asyncio.wait_for(w._driver, 5)
        await asyncio.sleep(0)

    with sock:
        uvloop.run(main())
    reports = [body for kind, body in channel.frames if kind == "report"]
    assert [r["tick"] for r in reports] == [1, 2] and reports[-1]["last"]
    assert 0.9 < reports[0]["span"] < 1.5
    assert sum(r["errors"]["connect"] for r in reports) >= 1
    [done] = [body for kind, body in channel.frames if kind == "msg"]
    assert 1.1 < done["done"] < 2.0 and "failed" not in done


def test_stopped_early_it_still_sends_what_it_counted() -> None:
    sock, url = refused_url()
    channel = Channel()

    async def main() -> None:
        w = worker(channel, load=LoadConfig(url=url, connections=1, duration=60), parts=1)
        w._exit = asyncio.get_running_loop().create_future()
        await w.init()
        await asyncio.sleep(0.05)
        await w.prepare_for_shutdown()
        assert w._exit.done() and w._driver.cancelled()
        await w.prepare_for_shutdown()  # a second stop changes nothing

    with sock:
        uvloop.run(main())
    kinds = [kind for kind, _ in channel.frames]
    assert kinds == ["report", "msg"]
    assert channel.frames[0][1]["last"] and channel.frames[0][1]["tick"] == 1


def test_a_driver_that_failed_is_said_once() -> None:
    channel = Channel()

    async def main() -> None:
        w = worker(channel, load=LoadConfig(url="http://127.0.0.1:9/", duration=60), parts=1)
        await w.init()
        w._driver.cancel()
        await asyncio.wait({w._driver})
        for _ in range(3):
            await asyncio.sleep(0)  # its done-callback ran: the run is over

        async def broken() -> None:
            raise RuntimeError("boom")

        w._finished = False
        failed = asyncio.get_running_loop().create_task(broken())
        await asyncio.wait({failed})
        w._done(failed)

    uvloop.run(main())
    messages = [body for kind, body in channel.frames if kind == "msg"]
    assert messages[-1]["failed"] == "RuntimeError: boom"

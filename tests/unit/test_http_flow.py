"""FlowControl alone: pause state of both directions and the writer waiting to drain."""

from __future__ import annotations

import asyncio

from _http_fakes import FakeTransport, run

from prefork.http._flow import FlowControl


def flow_on_fake() -> tuple[FlowControl, FakeTransport]:
    loop = asyncio.get_running_loop()
    transport = FakeTransport(asyncio.Protocol(), loop)
    return FlowControl(transport, loop), transport  # type: ignore[arg-type]


def test_reading_is_paused_and_resumed_once_however_often_asked() -> None:
    async def main() -> None:
        flow, transport = flow_on_fake()
        flow.resume_reading()  # not paused: nothing to do
        flow.pause_reading()
        flow.pause_reading()
        assert flow.read_paused and not transport.reading and transport.pauses == 1
        flow.resume_reading()
        flow.resume_reading()
        assert not flow.read_paused and transport.reading

    run(main())


def test_drain_waits_only_while_writing_is_paused() -> None:
    async def main() -> None:
        flow, _ = flow_on_fake()
        await asyncio.wait_for(flow.drain(), 1)  # not paused: at once
        flow.pause_writing()
        waiting = asyncio.ensure_future(flow.drain())
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()
        flow.resume_writing()
        await asyncio.wait_for(waiting, 1)
        assert not flow.write_paused and flow._waiter is None

    run(main())


def test_close_ends_new_waits_and_lost_releases_the_waiting_writer() -> None:
    async def main() -> None:
        flow, _ = flow_on_fake()
        flow.pause_writing()
        waiting = asyncio.ensure_future(flow.drain())
        await asyncio.sleep(0)
        flow.close()  # the transport still flushes: the writer waits for it
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()
        await asyncio.wait_for(flow.drain(), 1)  # but nobody starts waiting now
        flow.lost()
        await asyncio.wait_for(waiting, 1)
        flow.lost()  # twice is harmless
        assert flow.closed

    run(main())

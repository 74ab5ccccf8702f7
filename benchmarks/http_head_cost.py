"""CPU seconds the HTTP worker's protocol spends on a request head, by how it is split.

    python benchmarks/http_head_cost.py

Runs ``HTTPProtocol`` in this process on a transport that only records (no sockets, no
system calls), so only the parsing and checking is measured: heads of 16, 32 and 64 KB
(fields of 4,000 bytes) fed one byte per ``data_received``, and in 64-byte pieces. Linear
work costs twice as much for twice the bytes. Best of 3 runs.

The code under test is whatever ``import prefork`` finds: set PYTHONPATH to another checkout
to measure it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import prefork
from prefork.http._config import HTTPConfig
from prefork.http._connection import HTTPProtocol, ServerState


class Transport:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def head(size: int) -> bytes:
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 4000) for i in range(size // 4000))
    return b"GET / HTTP/1.1\r\nHost: t\r\n" + fields


async def cost(size: int, piece: int) -> float:
    loop = asyncio.get_running_loop()
    config = HTTPConfig(app=app)
    proto = HTTPProtocol(ServerState(config, app, loop))
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    data = head(size)
    began = time.process_time()
    for i in range(0, len(data), piece):
        proto.data_received(data[i : i + piece])
    used = time.process_time() - began
    proto.data_received(b"\r\n")
    for _ in range(10):
        await asyncio.sleep(0)
    assert transport.out.startswith(b"HTTP/1.1 200 "), bytes(transport.out[:100])
    return used


def main() -> int:
    print(f"prefork from {Path(prefork.__file__).parent.parent}, python {sys.version.split()[0]}")
    for piece in (1, 64):
        for size in (16_000, 32_000, 64_000):
            best = min(asyncio.run(cost(size, piece)) for _ in range(3))
            print(f"{size // 1000} KB head in {piece}-byte writes: {best:.3f} s CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serve an ASGI app with one HTTPWorker and no master: for benchmarks and quick trials.

    python -m prefork.http._standalone --bind 127.0.0.1:8000 examples.hello:app

SIGTERM or SIGINT drains and exits. Not a production server: nothing restarts the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from typing import Any

import uvloop

from prefork.http._config import add_serve_arguments, worker_options_from_args
from prefork.http._server import HTTPWorker


class _NullChannel:
    """Stands in for the master: ready and retire frames go nowhere."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, Any]] = []

    def send_frame(self, kind: str, body: Any = None) -> None:
        self.frames.append((kind, body))


def bind(address: str, backlog: int) -> socket.socket:
    """Bind and listen on ``host:port`` (IPv4 or ``[v6]:port``)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(backlog)
    return sock


async def serve(worker: HTTPWorker) -> int:
    """Run ``worker`` until SIGTERM/SIGINT, then drain; return the exit code."""
    loop = asyncio.get_running_loop()
    worker._exit = loop.create_future()
    await worker.init()
    worker.ready()
    stopping: list[asyncio.Task[None]] = []

    def stop() -> None:
        if not stopping:
            stopping.append(loop.create_task(worker.prepare_for_shutdown()))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    return await worker._exit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prefork.http._standalone")
    parser.add_argument("--bind", default="127.0.0.1:8000", help="host:port to listen on")
    parser.add_argument("--backlog", type=int, default=2048, help="listen backlog")
    add_serve_arguments(parser)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    options = worker_options_from_args(ns)
    sock = bind(ns.bind, ns.backlog)
    print(f"serving {ns.app} on http://{ns.bind}", file=sys.stderr, flush=True)
    worker = HTTPWorker(
        type="http", id=1, generation=1, sockets=[sock], options=options, channel=_NullChannel()
    )
    return uvloop.run(serve(worker))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""What a WebSocket client can make a worker hold, against what it cost the client to send.

    python benchmarks/ws_memory.py [--only NAME ...] [--interval 2]

Each check starts its own ``python -m prefork serve -w 1`` (127.0.0.1, a port the OS picks)
with the WebSocket defaults (``--ws-max-size`` 16 MiB, ``--ws-max-queue`` 32) and a small app
written to a scratch directory, speaks raw frames to it (so it can send what no library
would), and prints the bytes it sent, how the connection ended, and the worker's RSS before,
at its peak (VmHWM, reset before the check) and after, with the worker's CPU seconds:

- ``fragments``: one binary message as 300,000 two-byte fragments (0.6 MB of payload, 2.4 MB
  on the wire), sent as fast as the worker reads them, to an app that reads every message;
- ``deflate-queue``: 16 messages of 16 MiB of zeros, deflated (permessage-deflate, about
  16 KiB each on the wire), sent at once to an app that takes one every ``--interval``
  seconds; the line also says when the app got each message;
- ``deflate-bomb``: one 100 MiB message of zeros, deflated (about 100 KiB on the wire).

The code under test is whatever ``python -m prefork`` imports: set PYTHONPATH to another
checkout to measure it. Not a test: the numbers depend on the machine (and on the C
allocator, which may keep freed memory).
"""

from __future__ import annotations

import base64
import os
import socket
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _proc import cpu_seconds, memory_kib
from _served import Served, checks_parser, run_checks
from _wire import frame

APP = r"""
import asyncio, os, time

EVENTS = os.environ["WS_MEMORY_EVENTS"]
INTERVAL = float(os.environ["WS_MEMORY_INTERVAL"])


def note(line):
    with open(EVENTS, "a") as f:
        f.write(line + "\n")


async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    began = time.monotonic()
    while True:
        if scope["path"] == "/slow":
            await asyncio.sleep(INTERVAL)
        message = await receive()
        if message["type"] == "websocket.disconnect":
            note(f"disconnect {message['code']}")
            return
        size = len(message.get("bytes") or message.get("text") or "")
        note(f"message {size} {time.monotonic() - began:.1f}")
"""

BINARY, CONTINUATION, CLOSE = 0x2, 0x0, 0x8
MASK = b"\0\0\0\0"  # a zero masking key (RFC 6455 allows any): the payload goes as is
ZEROS_16M = bytes(16 << 20)


def deflated(compressor: Any, data: bytes) -> bytes:
    """One message's payload under permessage-deflate (RFC 7692 section 7.2.1)."""
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def reset_hwm(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS (proc(5))


class Client:
    """A raw WebSocket client over a non-blocking socket."""

    def __init__(self, port: int, path: str, deflate: bool) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16))
        offer = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else b""
        self.sock.sendall(
            b"GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
            % (path.encode(), key, offer)
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"the handshake was not answered: {head!r}")
            head += chunk
        head, _, self.received = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"the handshake was answered {head[:200]!r}")
        if deflate and b"permessage-deflate" not in head.lower():
            raise RuntimeError("the server did not accept permessage-deflate")
        self.sock.setblocking(False)
        self.sent = 0
        self.ended = ""  # how the connection ended, once it did

    def pump(self, out: memoryview) -> memoryview:
        """Send what the socket takes now and read what came; return what is left to send."""
        if out and not self.ended:
            try:
                n = self.sock.send(out)
                self.sent += n
                out = out[n:]
            except BlockingIOError:
                pass
            except OSError as exc:
                self.ended = f"send failed: {exc.strerror}"
        self.read()
        return out

    def read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.received += chunk
            self.ended = self.ended or "EOF"
        except BlockingIOError:
            pass
        except OSError as exc:
            self.ended = self.ended or f"recv failed: {exc.strerror}"

    def close_code(self) -> str:
        """The code of the server's close frame, if one came."""
        data = self.received
        while len(data) >= 2:
            size = data[1] & 0x7F
            start = 2 + {126: 2, 127: 8}.get(size, 0)
            if size >= 126:
                size = int.from_bytes(data[2:start], "big")
            if data[0] & 0x0F == CLOSE:
                return str(int.from_bytes(data[start : start + 2], "big"))
            data = data[start + size :]
        return "none"

    def close(self) -> None:
        self.sock.close()


class Bench:
    def __init__(self, workdir: Path, interval: float) -> None:
        self.workdir = workdir
        self.interval = interval
        (workdir / "ws_memory_app.py").write_text(APP)
        self.events = workdir / "events.txt"
        self.env = {"WS_MEMORY_EVENTS": str(self.events), "WS_MEMORY_INTERVAL": str(interval)}

    def server_for(self, check: str) -> Served:
        """A fresh server for every check, with the events file emptied."""
        self.events.write_text("")
        return Served("ws_memory_app:app", self.workdir, self.workdir, env=self.env)

    def notes(self, prefix: str) -> list[str]:
        return [ln for ln in self.events.read_text().splitlines() if ln.startswith(prefix)]

    def run(
        self, server: Served, path: str, wire: bytes, deflate: bool, done: Callable[[], bool]
    ) -> str:
        """Send ``wire`` as fast as the worker takes it, until ``done()`` or the end."""
        pid = server.worker()
        client = Client(server.port, path, deflate)
        time.sleep(0.2)  # the accept settles
        rss_before = memory_kib(pid)[0]
        reset_hwm(pid)
        cpu_before = cpu_seconds(pid)
        out = memoryview(wire)
        deadline = time.monotonic() + 60 + 20 * self.interval
        while not (done() or client.ended) and time.monotonic() < deadline:
            out = client.pump(out)
            time.sleep(0.001 if out else 0.05)
        time.sleep(0.5)
        client.read()
        peak = vm_hwm_kib(pid)
        cpu = cpu_seconds(pid) - cpu_before
        rss_after = memory_kib(pid)[0]
        client.close()
        return (
            f"sent {client.sent / 1e6:.2f} MB of {len(wire) / 1e6:.2f} MB; close code "
            f"{client.close_code()}, {client.ended or 'open'}; worker RSS {rss_before / 1024:.0f}"
            f" MiB before, peak {peak / 1024:.0f} MiB (+{(peak - rss_before) / 1024:.0f}), "
            f"{rss_after / 1024:.0f} MiB after; worker CPU {cpu:.2f} s"
        )

    # -- the checks ------------------------------------------------------------------------

    def fragments(self, server: Served) -> str:
        count = 300_000
        wire = b"".join(
            [
                frame(BINARY, b"ab", MASK, fin=False),
                frame(CONTINUATION, b"ab", MASK, fin=False) * (count - 2),
                frame(CONTINUATION, b"ab", MASK),
            ]
        )
        line = self.run(server, "/", wire, False, lambda: bool(self.notes("")))
        got = self.notes("message") or self.notes("disconnect") or ["nothing yet"]
        return f"{line}; the app got: {got[0]}"

    def deflate_queue(self, server: Served) -> str:
        compressor = zlib.compressobj(wbits=-15)
        one = frame(BINARY, deflated(compressor, ZEROS_16M), MASK, rsv1=True)
        rest = [frame(BINARY, deflated(compressor, ZEROS_16M), MASK, rsv1=True) for _ in range(15)]
        wire = one + b"".join(rest)
        line = self.run(server, "/slow", wire, True, lambda: len(self.notes("message")) >= 16)
        times = [ln.split()[2] for ln in self.notes("message")]
        return f"{line}; the app got {len(times)} messages, at {', '.join(times)} s"

    def deflate_bomb(self, server: Served) -> str:
        bomb = deflated(zlib.compressobj(wbits=-15), bytes(100 << 20))
        wire = frame(BINARY, bomb, MASK, rsv1=True)
        return self.run(server, "/", wire, True, lambda: bool(self.notes("")))


CHECKS = ["fragments", "deflate-queue", "deflate-bomb"]


def main() -> int:
    parser = checks_parser(__doc__, CHECKS)
    parser.add_argument("--interval", type=float, default=2.0, help="deflate-queue's app pace")
    args = parser.parse_args()
    return run_checks(args.only, "prefork-ws-memory-", lambda tmp: Bench(tmp, args.interval))


if __name__ == "__main__":
    sys.exit(main())

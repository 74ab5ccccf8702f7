"""What the HTTP worker does with hostile or unusual clients, measured on a real server.

    python benchmarks/http_hardening.py [--only NAME ...] [--seconds 10]

Starts ``python -m prefork serve -w 1`` (127.0.0.1, a port the OS picks) with a small app
written to a scratch directory, and prints one line per check:

- ``pipeline-unread``: a client pipelines ``GET /big`` (100 KB answers) and never reads, for
  ``--seconds``: the worker's RSS before and after, and its CPU seconds meanwhile;
- ``half-close``: 3 pipelined GETs then shutdown(SHUT_WR), 50 times: answers received;
- ``split-431``: a 9,000-byte header field and a partial line in one write: status and
  seconds until it comes (this server runs with ``--header-timeout 5``);
- ``slow-head``: a 63 KB request head sent one byte per write (0.1 ms apart, so the worker
  reads them one by one): the worker's CPU seconds, and for comparison those of a request
  body of that size sent the same way (each read costs its system calls and callbacks);
- ``lenient``: the status of obs-fold, bare LF, control bytes, and big trailers;
- ``gone-while-waiting``: 20 clients whose app awaits receive() close their connection:
  seconds until the app gets http.disconnect, CLOSE-WAIT sockets left after 2 s;
- ``reset-stream``: the client resets the connection while the app streams 300 small chunks
  without yielding: sends that returned, and whether one raised;
- ``head-500``, ``status-600``, ``receive-after``: what goes on the wire (or what receive()
  gives after the response);
- ``unix-proxy``: on a unix socket with ``--proxy-headers``, the client the app sees for
  ``X-Forwarded-For: 1.2.3.4``.

The code under test is whatever ``python -m prefork`` imports: set PYTHONPATH to another
checkout to measure it. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from _proc import cpu_seconds, memory_kib
from _served import Served, checks_parser, run_checks, wait_until

APP = r"""
import asyncio, json, os, time

BIG = b"b" * 102400
LAST = {}
EVENTS = os.environ["HARDENING_EVENTS"]


def note(line):
    with open(EVENTS, "a") as f:
        f.write(line + "\n")


async def answer(send, body, status=200):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/big":
        await answer(send, BIG)
    elif path == "/poll":
        await receive()
        began = time.monotonic()
        message = await receive()
        note(f"poll {message['type']} {time.monotonic() - began:.3f}")
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 100, "more_body": True})
        sent, raised = 0, "no"
        try:
            for _ in range(300):
                time.sleep(0.002)  # work that never yields to the loop
                await send({"type": "http.response.body", "body": b"x" * 100, "more_body": True})
                sent += 1
        except OSError as exc:
            raised = type(exc).__name__
        note(f"stream {sent} {raised}")
    elif path == "/err":
        raise RuntimeError("on purpose")
    elif path == "/600":
        await answer(send, b"odd", status=600)
    elif path == "/recv-after":
        await answer(send, b"ok")
        message = await receive()
        LAST["after"] = {k: v.decode() if isinstance(v, bytes) else v
                         for k, v in message.items()}
    elif path == "/last":
        await answer(send, json.dumps(LAST).encode())
    elif path == "/client":
        await answer(send, repr(scope["client"]).encode())
    else:
        while (await receive()).get("more_body"):
            pass
        await answer(send, b"hello")
"""


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until EOF or ``timeout`` seconds of silence."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def status_of(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "(closed, nothing)"


def one_shot(port: int, raw: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    with connect(port) as s:
        began = time.monotonic()
        s.sendall(raw)
        data = read_all(s, timeout)
        return data, time.monotonic() - began


class Bench:
    def __init__(self, workdir: Path, seconds: float) -> None:
        self.workdir = workdir
        self.seconds = seconds
        (workdir / "hardening_app.py").write_text(APP)
        self.events = workdir / "events.txt"
        self.events.touch()
        self.env = {"HARDENING_EVENTS": str(self.events)}

    def serve(self, *options: str, bind: str | None = None) -> Served:
        return Served(
            "hardening_app:app", self.workdir, self.workdir, *options, bind=bind, env=self.env
        )

    def server_for(self, check: str) -> Served | None:
        if check == "unix-proxy":
            return None  # it starts its own, on a unix socket
        # split-431 waits for the header timeout where the 431 is not given at once
        return self.serve(*(["--header-timeout", "5"] if check == "split-431" else []))

    def events_like(self, prefix: str) -> list[str]:
        return [ln for ln in self.events.read_text().splitlines() if ln.startswith(prefix)]

    def wait_events(self, prefix: str, count: int) -> None:
        wait_until(lambda: len(self.events_like(prefix)) >= count, 10, f"{count} {prefix} events")

    # -- the checks ------------------------------------------------------------------------

    def pipeline_unread(self, server: Served) -> str:
        pid = server.worker()
        rss_before = memory_kib(pid)[0]
        cpu_before = cpu_seconds(pid)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", server.port))
        s.setblocking(False)
        request = b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n" * 100
        end = time.monotonic() + self.seconds
        sent = 0
        peak = rss_before
        while time.monotonic() < end:
            try:
                sent += s.send(request)
            except BlockingIOError:
                time.sleep(0.01)
            peak = max(peak, memory_kib(pid)[0])
        cpu = cpu_seconds(pid) - cpu_before
        rss_after = memory_kib(pid)[0]
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        return (
            f"worker RSS {rss_before / 1024:.0f} MiB before, {rss_after / 1024:.0f} MiB after "
            f"{self.seconds:g} s (peak {peak / 1024:.0f} MiB); worker CPU {cpu:.2f} s; "
            f"client sent {sent // 1024} KiB of requests"
        )

    def half_close(self, server: Served) -> str:
        answers = []
        for _ in range(50):
            with connect(server.port) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 3)
                s.shutdown(socket.SHUT_WR)
                answers.append(read_all(s).count(b"HTTP/1.1 200"))
        spread = {n: answers.count(n) for n in sorted(set(answers))}
        return f"answers out of 3, over 50 tries: {spread}"

    def split_431(self, server: Served) -> str:
        raw = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\nX-Partial: abc"
        data, took = one_shot(server.port, raw, timeout=10)
        return f"{status_of(data)} after {took:.2f} s"

    def slow_head(self, server: Served) -> str:
        fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 4200) for i in range(15))
        head = b"GET / HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n"
        used, data = self.bytewise(server, head, b"")
        # for comparison: a body of that size in one-byte writes (each read has its cost)
        prefix = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(head)
        floor, _ = self.bytewise(server, b"x" * len(head), prefix)
        return (
            f"{len(head)} bytes: worker CPU {used:.2f} s, answer {status_of(data)}; "
            f"a body of that size in one-byte writes: {floor:.2f} s"
        )

    def bytewise(self, server: Served, raw: bytes, prefix: bytes) -> tuple[float, bytes]:
        """Send ``prefix``, then ``raw`` one byte per write: worker CPU seconds, answer."""
        pid = server.worker()
        with connect(server.port, timeout=60) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(prefix)
            before = cpu_seconds(pid)
            for i in range(len(raw)):
                s.send(raw[i : i + 1])
                time.sleep(0.0001)  # so that the worker reads them one by one
            data = read_all(s, timeout=2)
            return cpu_seconds(pid) - before, data

    def lenient(self, server: Served) -> str:
        base = b"POST / HTTP/1.1\r\nHost: t\r\n"
        cases = {
            "obs-fold TE": base + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
            "bare LF": b"GET / HTTP/1.1\nHost: t\n\n",
            "0x01 in value": b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n",
            "0x7f in value": b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x7fb\r\n\r\n",
            "70 KB trailer": base
            + b"Transfer-Encoding: chunked\r\n\r\n0\r\n"
            + b"".join(b"T%d: %s\r\n" % (i, b"t" * 7000) for i in range(10))
            + b"\r\n",
            "500 trailer fields": base
            + b"Transfer-Encoding: chunked\r\n\r\n0\r\n"
            + b"".join(b"T%d: t\r\n" % i for i in range(500))
            + b"\r\n",
        }
        out = []
        for name, raw in cases.items():
            data, _ = one_shot(server.port, raw, timeout=3)
            out.append(f"{name}: {status_of(data).removeprefix('HTTP/1.1 ')}")
        return "; ".join(out)

    def gone_while_waiting(self, server: Served) -> str:
        before = len(self.events_like("poll"))
        clients = []
        for _ in range(20):
            s = connect(server.port)
            s.sendall(b"GET /poll HTTP/1.1\r\nHost: t\r\n\r\n")
            clients.append(s)
        time.sleep(0.5)  # every app waits on receive()
        for s in clients:
            s.close()
        time.sleep(2.0)
        out = subprocess.run(
            ["ss", "-tan", "state", "close-wait", f"( sport = :{server.port} )"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        close_wait = max(0, len(out.strip().splitlines()) - 1)
        told = self.events_like("poll")[before:]
        times = sorted(float(line.split()[2]) - 0.5 for line in told)
        when = f"{len(told)} of 20 got http.disconnect" + (
            f", {times[0]:.2f}-{times[-1]:.2f} s after the close" if times else ""
        )
        return f"{when}; CLOSE-WAIT sockets 2 s after the close: {close_wait}"

    def reset_stream(self, server: Served) -> str:
        before = len(self.events_like("stream"))
        results = []
        for _ in range(5):
            s = connect(server.port)
            s.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
            s.recv(10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            self.wait_events("stream", before + len(results) + 1)
            results.append(self.events_like("stream")[-1])
        runs = [line.split()[1:] for line in results]
        raised = sum(1 for _, r in runs if r != "no")
        sends = ", ".join(sent for sent, _ in runs)
        return f"send() raised in {raised} of 5 runs; sends that returned: {sends} (of 300)"

    def head_500(self, server: Served) -> str:
        data, _ = one_shot(server.port, b"HEAD /err HTTP/1.1\r\nHost: t\r\n\r\n")
        body = data.partition(b"\r\n\r\n")[2]
        return f"{status_of(data)}, {len(body)} body bytes after the head: {body!r}"

    def status_600(self, server: Served) -> str:
        data, _ = one_shot(server.port, b"GET /600 HTTP/1.1\r\nHost: t\r\n\r\n")
        return status_of(data)

    def receive_after(self, server: Served) -> str:
        last = b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        one_shot(server.port, b"GET /recv-after HTTP/1.1\r\nHost: t\r\n\r\n" + last)
        data, _ = one_shot(server.port, last)
        seen = json.loads(data.partition(b"\r\n\r\n")[2] or b"{}")
        return f"receive() after the response gave {seen.get('after')}"

    def unix_proxy(self) -> str:
        path = self.workdir / "proxy.sock"
        out = []
        for allow in (None, "unix"):
            options = ["--proxy-headers"] + (["--forwarded-allow-ips", allow] if allow else [])
            try:
                server = self.serve(*options, bind=f"unix:{path}")
            except RuntimeError as exc:
                out.append(f"--forwarded-allow-ips {allow}: refused ({str(exc)[-120:]!r})")
                continue
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(5)
                    s.connect(str(path))
                    s.sendall(
                        b"GET /client HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.2.3.4\r\n"
                        b"Connection: close\r\n\r\n"
                    )
                    body = read_all(s).partition(b"\r\n\r\n")[2].decode()
                label = allow or "default"
                out.append(f"--forwarded-allow-ips {label}: client {body}")
            finally:
                server.stop()
        return "; ".join(out)


CHECKS = [
    "pipeline-unread",
    "half-close",
    "split-431",
    "slow-head",
    "lenient",
    "gone-while-waiting",
    "reset-stream",
    "head-500",
    "status-600",
    "receive-after",
    "unix-proxy",
]


def main() -> int:
    parser = checks_parser(__doc__, CHECKS)
    parser.add_argument("--seconds", type=float, default=10.0, help="pipeline-unread length")
    args = parser.parse_args()
    return run_checks(args.only, "prefork-hardening-", lambda tmp: Bench(tmp, args.seconds))


if __name__ == "__main__":
    sys.exit(main())

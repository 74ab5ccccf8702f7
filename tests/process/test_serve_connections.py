"""`prefork serve` and its connections: keep-alive spread over the workers, HTTP/1.0
keep-alive, on real sockets (a raw client, to see what goes on the wire)."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections import Counter
from collections.abc import Callable

import pytest
from helpers import MasterProcess, wait_until
from test_serve import serve, wait_serving

pytestmark = pytest.mark.timeout(60)

Start = Callable[..., MasterProcess]

KEEP_ALIVE_10 = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
GET_11 = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def read_response(conn: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """(head, body, what followed) of one response with a Content-Length."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        assert chunk, f"closed before a response: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    assert match is not None, head
    length = int(match.group(1))
    while len(rest) < length:
        chunk = conn.recv(65536)
        assert chunk, "closed inside a body"
        rest += chunk
    return head, rest[:length], rest[length:]


def server_side_open(port: int) -> int:
    """Connections to ``port`` the server has not closed yet (ESTABLISHED or CLOSE_WAIT in
    /proc/net/tcp, on the listening side)."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            if local_port == port and fields[3] in ("01", "08"):
                count += 1
    return count


def test_http_10_keep_alive_is_kept_alive(start: Start, sock: socket.socket) -> None:
    """ab -k's requests: one connection answers them all, each said to be kept alive; a
    request without keep-alive is answered and the connection closes."""
    port = sock.getsockname()[1]
    master = serve(start, sock, workers=1)
    wait_serving(master, 1)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        rest = b""
        pids = set()
        for _ in range(3):
            conn.sendall(KEEP_ALIVE_10)
            head, body, rest = read_response(conn, rest)
            assert head.startswith(b"HTTP/1.1 200") and b"\r\nconnection: keep-alive" in head
            pids.add(body)
        assert len(pids) == 1
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        head, _, rest = read_response(conn, rest)
        assert b"\r\nconnection: close" in head
        assert rest == b"" and conn.recv(100) == b""  # closed by the server
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0


def test_keep_alive_connections_opened_together_spread_over_the_workers(
    start: Start, sock: socket.socket
) -> None:
    """16 connections opened at once on 2 workers: neither holds more than 10 (the kernel
    wakes every worker, and without the fair-share rule the first to run took all 16)."""
    port = sock.getsockname()[1]
    master = serve(start, sock, workers=2)
    workers = wait_serving(master, 2)
    for _ in range(4):
        conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
        try:
            for conn in conns:
                conn.sendall(GET_11)
            held: Counter[int] = Counter()
            for conn in conns:
                _, body, _ = read_response(conn)
                held[int(body)] += 1
        finally:
            for conn in conns:
                conn.close()
        assert set(held) <= workers and sum(held.values()) == 16
        assert max(held.values()) <= 10, held
        # The workers count the connections they hold: wait until they closed these.
        wait_until(lambda: server_side_open(port) == 0, 10, "the connections closed")
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0


def test_a_paused_worker_does_not_hold_back_the_others(start: Start, sock: socket.socket) -> None:
    """A worker stopped (SIGSTOP) with no connection is the one with the fewest: the other
    steps aside for it at most DEFER_MAX per burst, then takes every connection."""
    port = sock.getsockname()[1]
    master = serve(start, sock, workers=2)
    paused, running = sorted(wait_serving(master, 2))
    os.kill(paused, signal.SIGSTOP)
    try:
        conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
        try:
            for conn in conns:
                conn.sendall(GET_11)
            answered = Counter(int(read_response(conn)[1]) for conn in conns)
        finally:
            for conn in conns:
                conn.close()
    finally:
        os.kill(paused, signal.SIGCONT)
    assert answered == Counter({running: 16})
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0

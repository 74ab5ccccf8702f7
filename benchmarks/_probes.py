"""What publish.py's lifecycle rows use to see what answers: raw requests on many connections
at once, which worker holds which accepted socket (sock_diag and /proc/PID/fd), and polls
until a server answers or has replaced its workers."""

from __future__ import annotations

import contextlib
import http.client
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

from _peers import Server, request
from _proc import alive
from _wire import REQUEST, read_response

# -- lifecycle: probing what answers --------------------------------------------------------


@contextlib.contextmanager
def connections_at_once(port: int, n: int) -> Iterator[tuple[list[socket.socket], float]]:
    """``n`` connections opened together, a GET answered 200 on each, kept open; and when the
    last answer came (time.monotonic)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        with selectors.DefaultSelector() as sel:
            for s in socks:
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                sel.register(s, selectors.EVENT_WRITE)
            pending = len(socks)
            deadline = time.monotonic() + 10
            while pending:
                events = sel.select(max(0.0, deadline - time.monotonic()))
                if not events:
                    raise TimeoutError("connections not established within 10 s")
                for key, _ in events:
                    sel.unregister(key.fileobj)
                    pending -= 1
        for s in socks:
            error = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise ConnectionError(os.strerror(error))
            s.settimeout(10)
            s.sendall(REQUEST)
        for s in socks:
            if (status := read_response(s)[0]) != 200:
                raise ConnectionError(f"answered {status}")
        yield socks, time.monotonic()
    finally:
        for s in socks:
            s.close()


TCP_ESTABLISHED, TCP_CLOSE_WAIT = 1, 8


def server_sockets(port: int, states: int) -> dict[int, int]:
    """{client port: inode} of the server's side of the TCP connections on 127.0.0.1:``port``
    in ``states`` (a mask of 1 << TCP state), from the kernel's sock_diag over netlink (what
    ``ss`` reads): the kernel filters by state, so the TIME_WAIT sockets of a load run cost
    nothing, where reading /proc/net/tcp took 100 ms once it held 20,000 of them."""
    nlmsg_done, nlmsg_error, sock_diag_by_family = 3, 2, 20
    request = struct.pack(
        "=IHHII" "BBBxI" "48s",  # nlmsghdr, inet_diag_req_v2 (the sockid left zero)
        16 + 56, sock_diag_by_family, 0x1 | 0x300, 1, 0,  # NLM_F_REQUEST | NLM_F_DUMP
        socket.AF_INET, socket.IPPROTO_TCP, 0, states, b"",
    )  # fmt: skip
    found: dict[int, int] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4) as nl:  # NETLINK_SOCK_DIAG
        nl.sendall(request)
        while True:
            data = nl.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == nlmsg_done:
                    return found
                if kind == nlmsg_error:
                    raise OSError(f"sock_diag answered an error: {data[offset : offset + 20]!r}")
                # inet_diag_msg: family, state, timer, retrans, then the sockid (ports big-endian)
                local, remote = struct.unpack_from("!HH", data, offset + 16 + 4)
                if local == port:
                    found[remote] = struct.unpack_from("=I", data, offset + 16 + 68)[0]
                offset += (length + 3) & ~3


def owners(port: int, socks: list[socket.socket], pids: set[int]) -> list[int | None]:
    """The process (among ``pids``) holding the server side of each connection: the accepted
    socket's inode (sock_diag), found in the process's fd table."""
    ours = [s.getsockname()[1] for s in socks]
    wanted = set(ours)
    inode_of = {
        f"socket:[{inode}]": remote
        for remote, inode in server_sockets(port, 1 << TCP_ESTABLISHED).items()
        if remote in wanted
    }
    holder: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link in inode_of:
                        holder[inode_of[link]] = pid
    return [holder.get(p) for p in ours]


def wait_closed(port: int, timeout: float = 10.0) -> None:
    """Poll until the server holds no established or half-closed connection on ``port``."""
    deadline = time.monotonic() + timeout
    while server_sockets(port, 1 << TCP_ESTABLISHED | 1 << TCP_CLOSE_WAIT):
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def first_answer(server: Server, timeout: float = 60.0) -> None:
    """Poll until GET / answers 200 (a refused connection is retried after 5 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"exited with {server.proc.returncode}: {server.tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if request(server.port, "GET", "/")[0] == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no 200 within {timeout:g} s: {server.tail()}")
        time.sleep(0.005)


def all_replaced(server: Server, old: set[int]) -> Callable[[], bool]:
    """A predicate: every old worker gone, and ``workers`` new ones through lifespan startup."""

    def done() -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {server.proc.returncode}")
        new = server.worker_pids()
        return len(new) >= server.workers and not new & old and not any(map(alive, old))

    return done


class Prober(threading.Thread):
    """GET / on a new connection every 10 ms (2 s timeout): (time sent, answered 200)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stopped = threading.Event()
        self.samples: list[tuple[float, bool]] = []

    def run(self) -> None:
        while not self.stopped.is_set():
            began = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                ok = conn.getresponse().status == 200
            except (OSError, http.client.HTTPException):
                ok = False
            finally:
                conn.close()
            self.samples.append((began, ok))
            self.stopped.wait(max(0.0, began + 0.01 - time.monotonic()))

"""`prefork serve` end to end: a real master started as a user would, real HTTP clients.

Every master runs in its own session and is stopped (SIGINT, then SIGKILL of its process
group) by the ``start`` fixture whatever happens. Listening sockets are bound here on
127.0.0.1 with an OS-chosen port and handed over as ``fd://N``. Conditions are polled with a
deadline; the one fixed wait (``test_app_failing_at_start_backs_off``) measures a rate.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import ROOT, MasterProcess, alive, wait_until

pytestmark = pytest.mark.timeout(30)

SERVE_APPS = Path(__file__).parent / "serve_apps"
EXAMPLES = ROOT / "examples"
READY = re.compile(r"worker \d+ \(pid (\d+), generation \d+\) is ready")
Start = Callable[..., MasterProcess]

# A request on a reused keep-alive connection that was closed before any response byte may be
# retried once when idempotent (RFC 9112 section 9.3.1). http.client reports that as
# RemoteDisconnected (no status line at all), or as a reset/broken pipe when the server's close
# raced our write. Our responses are a single small write, so a reset never splits one.
RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def serve(
    start: Start,
    sock: socket.socket,
    *options: str,
    app: str = "serving:app",
    app_dir: Path = SERVE_APPS,
    workers: int = 2,
    env: dict[str, str] | None = None,
) -> MasterProcess:
    argv = [sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
    argv += ["--app-dir", str(app_dir), "--workers", str(workers), *options, app]
    return start(argv, pass_fds=[sock], env=env)


def ready_logged(master: MasterProcess) -> set[int]:
    return {int(pid) for pid in READY.findall(master.stderr())}


def wait_serving(
    master: MasterProcess, n: int, timeout: float = 10.0, replacing: set[int] = frozenset()
) -> set[int]:
    """Wait until exactly ``n`` workers run, each logged as ready and none of ``replacing``."""

    def settled() -> list[set[int]]:
        master.check_running(f"{n} serving workers")
        pids = master.workers()
        if len(pids) == n and pids <= ready_logged(master) and not pids & replacing:
            return [pids]  # truthy even when empty
        return []

    return wait_until(settled, timeout, f"{n} ready workers (replacing {sorted(replacing)})")[0]


def wait_log(master: MasterProcess, text: str, count: int = 1, timeout: float = 10.0) -> None:
    def seen() -> bool:
        master.check_running(repr(text))
        return master.stderr().count(text) >= count

    wait_until(seen, timeout, f"{count} x {text!r} in the log")


def get(port: int, path: str = "/", timeout: float = 5.0) -> http.client.HTTPResponse:
    """One GET on a fresh connection; the response is read whole (``.data``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.data = response.read()  # type: ignore[attr-defined]
        return response
    finally:
        conn.close()


class Load(threading.Thread):
    """A client sending GETs back to back, keeping its connection alive (or a new connection
    per request), applying the 9.3.1 retry rule. Records answers per pid and every failure,
    with the time the failed request's connection was opened."""

    def __init__(self, port: int, *, keep_alive: bool = True) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.keep_alive = keep_alive
        self.stopped = threading.Event()
        self.pids: Counter[int] = Counter()
        self.answers: list[tuple[float, int]] = []  # (time answered, pid)
        self.failures: list[tuple[float, str]] = []  # (time its connection was opened, what)
        self.retries: list[str] = []  # why each retried request failed the first time
        self._conn: http.client.HTTPConnection | None = None
        self._opened = 0.0

    def _once(self) -> tuple[int, bytes]:
        conn = self._conn
        if conn is None or conn.sock is None:  # http.client closes after `connection: close`
            if conn is not None:
                conn.close()
            conn = self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            self._opened = time.monotonic()
        headers = {} if self.keep_alive else {"Connection": "close"}
        try:
            conn.request("GET", "/", headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except BaseException:
            conn.close()
            self._conn = None
            raise

    def request(self) -> None:
        reused = self._conn is not None and self._conn.sock is not None
        try:
            try:
                status, body = self._once()
            except RETRYABLE as exc:
                if not reused:
                    raise
                self.retries.append(type(exc).__name__)
                status, body = self._once()  # on a new connection: no second retry
        except Exception as exc:
            self.failures.append((self._opened, repr(exc)))
            return
        if status != 200:
            self.failures.append((self._opened, f"status {status}: {body[:100]!r}"))
            return
        pid = int(body)
        self.pids[pid] += 1
        self.answers.append((time.monotonic(), pid))

    def run(self) -> None:
        while not self.stopped.is_set():
            self.request()
        if self._conn is not None:
            self._conn.close()

    @property
    def count(self) -> int:
        return len(self.answers)


@contextmanager
def load(port: int, threads: int = 3, *, keep_alive: bool = True) -> Iterator[list[Load]]:
    clients = [Load(port, keep_alive=keep_alive) for _ in range(threads)]
    for c in clients:
        c.start()
    try:
        yield clients
    finally:
        for c in clients:
            c.stopped.set()
        for c in clients:
            c.join(10)


def total(clients: list[Load]) -> int:
    return sum(c.count for c in clients)


def failures(clients: list[Load]) -> list[tuple[float, str]]:
    return [f for c in clients for f in c.failures]


def wait_answers(clients: list[Load], more: int, timeout: float = 10.0) -> None:
    """Wait until the clients got ``more`` answers than now."""
    target = total(clients) + more
    wait_until(lambda: total(clients) >= target, timeout, f"{more} more answers")


# --- the Quick start ---------------------------------------------------------------------------


def test_quick_start_hello(start: Start, sock: socket.socket) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, app="hello:app", app_dir=EXAMPLES, workers=3)
    pids = wait_serving(master, 3)
    assert len(pids) == 3 and master.pid not in pids
    response = get(port)
    assert response.status == 200
    assert response.data == b"Hello, world!\n"  # type: ignore[attr-defined]
    assert response.getheader("content-type") == "text/plain; charset=utf-8"
    assert response.getheader("server") == "prefork"
    assert response.getheader("date")
    if shutil.which("curl"):
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            timeout=10,
            check=True,
        ).stdout
        assert out == b"Hello, world!\n"
    assert master.workers() == pids
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0


# --- rolling reload ----------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["auto", "off"])  # the default forks from templates
def test_three_reloads_under_load_lose_nothing(
    start: Start, sock: socket.socket, template: str
) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, "--template", template, workers=3)
    pids = wait_serving(master, 3)
    seen = set(pids)
    with load(port, threads=4) as clients:
        wait_answers(clients, 200)
        for n in range(1, 4):
            master.signal(signal.SIGHUP)
            wait_log(master, "reload done", count=n)
            new = wait_serving(master, 3, replacing=seen)
            seen |= new
            wait_answers(clients, 100)
    assert failures(clients) == []
    answered_by = set().union(*(c.pids for c in clients))
    assert len(seen) == 12 and answered_by <= seen
    assert answered_by & new, "the last generation answered nothing"
    assert "rolled back" not in master.stderr()


def test_a_keep_alive_client_idle_across_a_reload_is_answered(
    start: Start, sock: socket.socket
) -> None:
    """A client that never retries and sends its next request on its idle keep-alive
    connection once the reload is done: the old worker, draining, answers it (with
    Connection: close) rather than having closed the connection under it."""
    port = sock.getsockname()[1]
    master = serve(start, sock, workers=1)
    (old,) = wait_serving(master, 1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/")
    assert int(conn.getresponse().read()) == old
    master.signal(signal.SIGHUP)
    wait_log(master, "reload done")
    conn.request("GET", "/")
    response = conn.getresponse()
    assert int(response.read()) == old and response.getheader("connection") == "close"
    conn.close()
    (new,) = wait_serving(master, 1, replacing={old})
    assert int(get(port).data) == new  # type: ignore[attr-defined]


# --- a reload onto broken code ---------------------------------------------------------------


@pytest.mark.parametrize("broken", ["import", "lifespan", "module gone"])
def test_reload_onto_broken_code_rolls_back(
    start: Start, sock: socket.socket, tmp_path: Path, broken: str
) -> None:
    """A deploy whose app raises at import, fails lifespan startup, or whose module is gone:
    the reload rolls back and the old workers keep serving; the fixed deploy then goes out."""
    port = sock.getsockname()[1]
    flag = tmp_path / "broken.flag"
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    module = app_dir / "deployed.py"
    shutil.copy(SERVE_APPS / "serving.py", module)
    var = "SERVE_APP_BREAK_IMPORT" if broken == "import" else "SERVE_APP_BREAK_LIFESPAN"
    master = serve(start, sock, app="deployed:app", app_dir=app_dir, env={var: str(flag)})
    pids = wait_serving(master, 2)
    with load(port, threads=2) as clients:
        wait_answers(clients, 50)
        if broken == "module gone":
            module.rename(tmp_path / "elsewhere.py")
        else:
            flag.touch()
        master.signal(signal.SIGHUP)
        wait_log(master, "reload rolled back")
        wait_answers(clients, 50)
        assert master.workers() == pids
        rolled_back_at = time.monotonic()
        if broken == "module gone":
            (tmp_path / "elsewhere.py").rename(module)
        else:
            flag.unlink()
        master.signal(signal.SIGHUP)
        wait_log(master, "reload done")
        new = wait_serving(master, 2, replacing=pids)
        wait_until(lambda: any(c.pids.keys() & new for c in clients), 5, "new workers answer")
    assert failures(clients) == []
    before = {pid for c in clients for t, pid in c.answers if t <= rolled_back_at}
    assert before and before <= pids
    reason = {
        "import": "serving: broken on purpose at import",
        "lifespan": "application startup failed: serving: lifespan broken",
        "module gone": "cannot import app 'deployed:app': no module named 'deployed'",
    }[broken]
    assert reason in master.stderr()


def test_reload_picks_up_new_code_in_the_app_package(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    """APP names a module inside a package; the package's ``__init__`` changes between
    deploys. The master must not import it, or every reload forks the old code again."""
    port = sock.getsockname()[1]
    version = tmp_path / "version.txt"
    version.write_text("1")
    master = serve(start, sock, app="pkgapp.main:app", env={"SERVE_APP_VERSION": str(version)})
    pids = wait_serving(master, 2)
    assert get(port).data.split()[0] == b"1"  # type: ignore[attr-defined]
    version.write_text("2")  # the deploy
    master.signal(signal.SIGHUP)
    wait_log(master, "reload done")
    new = wait_serving(master, 2, replacing=pids)
    served, imported_by, pid = get(port).data.split()  # type: ignore[attr-defined]
    assert int(pid) in new
    assert int(imported_by) != master.pid, "the master imported the app's package"
    assert served == b"2", "the reload served the old code"


# --- drain, resume, stop -----------------------------------------------------------------------


def test_drain_finishes_in_flight_then_resume_and_stop(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    events = tmp_path / "events.txt"
    master = serve(start, sock, env={"SERVE_APP_EVENTS": str(events)})
    wait_serving(master, 2)
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    idle.request("GET", "/")
    assert idle.getresponse().read().isdigit()
    quiet = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    quiet.request("GET", "/")
    assert quiet.getresponse().read().isdigit()
    results: list[tuple[int, str | None, bytes] | str] = []

    def slow() -> None:
        try:
            response = get(port, "/slow?t=1.0")
            body = response.data  # type: ignore[attr-defined]
            results.append((response.status, response.getheader("connection"), body))
        except Exception as exc:
            results.append(repr(exc))

    threads = [threading.Thread(target=slow) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(
        lambda: events.exists() and events.read_text().count("start") == 3, 5, "3 slow requests"
    )
    master.signal(signal.SIGTERM)
    for t in threads:
        t.join(10)
    assert len(results) == 3
    for result in results:
        assert not isinstance(result, str), result
        status, connection, body = result
        assert (status, connection) == (200, "close") and body.startswith(b"slow ")
    # An idle keep-alive connection may still bring a request (its client may have sent it
    # as the drain began): answered, with Connection: close. One that brings nothing is
    # closed at its keep-alive deadline (5 s after its answer).
    idle.request("GET", "/")
    response = idle.getresponse()
    assert response.read().isdigit() and response.getheader("connection") == "close"
    idle.close()
    assert quiet.sock is not None
    assert quiet.sock.recv(100) == b""
    quiet.close()
    wait_serving(master, 0)
    master.check_running("drained")
    master.signal(signal.SIGUSR2)
    pids = wait_serving(master, 2)
    response = get(port)
    assert response.status == 200 and int(response.data) in pids  # type: ignore[attr-defined]
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0
    assert master.workers() == set()


# --- kill -9 of a worker -----------------------------------------------------------------------


@pytest.mark.parametrize("template", ["auto", "off"])
def test_kill_9_of_a_worker_under_load(start: Start, sock: socket.socket, template: str) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, "--template", template, workers=3)
    pids = wait_serving(master, 3)
    with load(port, threads=3, keep_alive=False) as clients:
        wait_until(
            lambda: set().union(*(c.pids for c in clients)) == pids, 10, "every worker answered"
        )
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not alive(victim), 5, "the victim dead")
        dead_at = time.monotonic()
        new = wait_serving(master, 3, replacing={victim})
        (replacement,) = new - pids
        wait_until(
            lambda: any(replacement in c.pids for c in clients), 10, "the replacement answers"
        )
        wait_answers(clients, 50)
    late = [f for f in failures(clients) if f[0] > dead_at]
    assert late == [], late
    survivors = pids - {victim}
    answered_after = {pid for c in clients for t, pid in c.answers if t > dead_at}
    assert survivors <= answered_after
    assert f"(pid {victim}) exited with signal 9" in master.stderr()


# --- --max-requests ----------------------------------------------------------------------------


def test_max_requests_replaces_workers_rolling(start: Start, sock: socket.socket) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, "--max-requests", "150", "--max-requests-jitter", "20")
    first = wait_serving(master, 2)
    with load(port, threads=3) as clients:

        def distinct() -> bool:
            master.check_running("recycling")
            return len(set().union(*(c.pids for c in clients))) >= 6

        wait_until(distinct, 20, "6 distinct workers answering")
    assert failures(clients) == []
    answered_by = set().union(*(c.pids for c in clients))
    assert answered_by - first
    wait_log(master, "left as asked", count=4)
    log = master.stderr()
    assert "exited with" not in log  # every replaced worker left as asked, none crashed
    # rolling, never all at once: replay the log, ready workers never fall below 2
    live, lowest = 0, 2
    for line in log.splitlines():
        if "is ready" in line:
            live += 1
        elif "left as asked" in line:
            live -= 1
            lowest = min(lowest, live)
    assert lowest >= 2


# --- an app that cannot start ------------------------------------------------------------------


def test_app_failing_at_its_first_start_exits_3(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    """A failing startup must not look like a running service: no worker ever served, so
    the master stops them all and exits 3, with the error printed once. (An app that cannot
    be imported is refused before the master starts: test_serve_app_errors.py.)"""
    flag = tmp_path / "broken.flag"
    flag.touch()
    env = {"SERVE_APP_BREAK_LIFESPAN": str(flag)}
    master = serve(start, sock, workers=2, env=env)
    assert master.wait_exit(10) == 3
    log = master.stderr()
    assert "could not start:\napplication startup failed: serving: lifespan broken\n" in log
    assert "no http worker could start" in log and "(exit code 3)" in log
    assert "failed early" not in log and "backing off" not in log


def test_app_failing_after_it_served_backs_off(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    flag = tmp_path / "broken.flag"
    spawns = tmp_path / "spawns.txt"
    env = {"SERVE_APP_BREAK_IMPORT": str(flag), "SERVE_APP_SPAWNS": str(spawns)}
    # (--template off: with a template, the crashed worker comes back from the template's
    # code, which imported: test_serve_templates.py)
    master = serve(start, sock, "--template", "off", workers=1, env=env)
    (pid,) = wait_serving(master, 1)
    flag.touch()  # from now on the app cannot be imported
    os.kill(pid, signal.SIGKILL)
    began = time.monotonic()
    wait_log(master, "failed starts in a row: backing off, next start in")
    time.sleep(max(0.0, began + 2.0 - time.monotonic()))  # a window to count attempts in
    attempts = len(spawns.read_text().split()) - 2  # the check before the start, worker 1
    master.check_running("backing off")
    assert 2 <= attempts <= 8, f"{attempts} boot attempts in 2 s"
    assert master.stderr().count("RuntimeError: serving: broken on purpose at import\n") == 1
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0


def test_factory(start: Start, sock: socket.socket) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, "--factory", app="serving:create_app", workers=1)
    (pid,) = wait_serving(master, 1)
    assert get(port).data == str(pid).encode()  # type: ignore[attr-defined]


def test_preload_serves_and_reports_an_import_error(
    start: Start, sock: socket.socket, tmp_path: Path
) -> None:
    port = sock.getsockname()[1]
    master = serve(start, sock, "--preload", app="hello:app", app_dir=EXAMPLES)
    wait_serving(master, 2)
    assert get(port).data == b"Hello, world!\n"  # type: ignore[attr-defined]
    flag = tmp_path / "broken.flag"
    flag.touch()
    argv = [sys.executable, "-m", "prefork", "serve", "--preload", "--app-dir", str(SERVE_APPS)]
    broken = start([*argv, "serving:app"], env={"SERVE_APP_BREAK_IMPORT": str(flag)})
    assert broken.wait_exit() == 2
    source = (SERVE_APPS / "serving.py").read_text().splitlines()
    line = source.index('    raise RuntimeError("serving: broken on purpose at import")') + 1
    assert broken.stderr().splitlines()[-2:] == [
        "RuntimeError: serving: broken on purpose at import",
        "prefork: error: cannot import app 'serving:app': "
        "RuntimeError: serving: broken on purpose at import "
        f"({SERVE_APPS}/serving.py, line {line})",
    ]


# --- --pid and bad command lines ---------------------------------------------------------------


def test_pid_file(start: Start, sock: socket.socket, tmp_path: Path) -> None:
    pidfile = tmp_path / "prefork.pid"
    master = serve(start, sock, "--pid", str(pidfile), app="hello:app", app_dir=EXAMPLES)
    wait_serving(master, 2)
    assert pidfile.read_text().strip() == str(master.pid)
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0
    assert not pidfile.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "-1"], "--workers must be 1 or more, got -1"),
        (["--bind", "nonsense:xx"], "bad address 'nonsense:xx'"),
        (["--bind", "IN_USE"], "address already in use"),
        (["--keep-alive", "0"], "keep_alive must be a number of seconds > 0, got 0.0"),
        (["--app-dir", "/nonexistent-dir"], "cannot import app 'hello:app'"),
        (["--app-dir", "."], "no module named 'hello'"),
        (["--app-dir", str(EXAMPLES), "APP=hello.sub:app"], "('hello' is not a package)"),
    ],
)
def test_bad_value_is_one_error_line_and_exit_2(
    start: Start, options: list[str], message: str
) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        options = [f"127.0.0.1:{holder.getsockname()[1]}" if o == "IN_USE" else o for o in options]
        app = next((o[4:] for o in options if o.startswith("APP=")), "hello:app")
        options = [o for o in options if not o.startswith("APP=")]
        argv = [sys.executable, "-m", "prefork", "serve", "--app-dir", str(EXAMPLES)]
        master = start([*argv, *options, app])
        assert master.wait_exit() == 2
    finally:
        holder.close()
    lines = master.stderr().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefork: error: "), lines
    assert message in lines[0]
    assert master.stdout() == ""


@pytest.mark.parametrize(
    "options", [["--wokers", "2"], ["--workers", "x"], ["--lifespan", "maybe"]]
)
def test_bad_flag_is_a_usage_error_exit_2(start: Start, options: list[str]) -> None:
    master = start([sys.executable, "-m", "prefork", "serve", *options, "hello:app"])
    assert master.wait_exit() == 2
    lines = master.stderr().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefork: error: "), lines
    assert "--help'" in lines[0]


# --- a real framework ----------------------------------------------------------------------------


def test_starlette_example(start: Start, sock: socket.socket) -> None:
    pytest.importorskip("starlette")
    port = sock.getsockname()[1]
    master = serve(start, sock, app="starlette_app:app", app_dir=EXAMPLES, workers=1)
    wait_serving(master, 1)
    response = get(port, "/")
    assert response.status == 200
    assert response.getheader("content-type") == "application/json"
    assert response.data == b'{"hello":"world"}'  # type: ignore[attr-defined]
    response = get(port, "/count?n=5")
    assert response.status == 200
    assert response.getheader("transfer-encoding") == "chunked"
    assert response.data == b"0\n1\n2\n3\n4\n"  # type: ignore[attr-defined]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/echo", body=b"x" * 100_000)
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b'{"length":100000,"method":"POST"}')
    conn.request("GET", "/sync")  # same connection: keep-alive
    assert conn.getresponse().read() == b'{"sync":true}'
    conn.close()

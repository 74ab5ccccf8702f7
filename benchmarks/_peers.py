"""The servers the benchmarks compare prefork with: how each is started, what it needs, a
handle on a running one, and the check that it answers a workload's request as the load
generator sends it. Shared by http_speed.py and publish.py, so that both start and check every
server the same way.

Every server serves examples/bench_apps.py (or a copy of it: ``app``) on 127.0.0.1, a port
the OS picks, at log level warning and without an access log:

    prefork, prefork-auto  prefork serve --http auto  (a fast path for common heads, else h11)
    prefork-h11         prefork serve --http h11
    uvicorn-h11         uvicorn --http h11 --loop uvloop
    uvicorn-httptools   uvicorn --http httptools --loop uvloop  (what uvicorn[standard] runs)
    gunicorn-uvicorn    gunicorn -k uvicorn.workers.UvicornWorker  (uvloop + httptools; the
                        uvicorn-worker package's class instead when that is installed)
    gunicorn-asgi       gunicorn -k asgi --asgi-loop uvloop  (gunicorn >= 25; its C parser
                        when gunicorn_h1c is installed, else its Python one)
    granian             granian --interface asgi --loop uvloop --http 1
    hypercorn           hypercorn --worker-class uvloop  (h11; no access log by default)

and the WSGI servers (benchmarks/wsgi.py; the thread count comes in ``extra``, see
``wsgi_threads``):

    prefork-wsgi        prefork serve --interface wsgi --http auto
    gunicorn-gthread    gunicorn -k gthread
    gunicorn-sync       gunicorn -k sync  (one request at a time per worker, no keep-alive)
    granian-wsgi        granian --interface wsgi --http 1
    uvicorn-a2wsgi      uvicorn --http httptools --loop uvloop, serving the app's a2wsgi
                        wrapping (``APP_asgi`` in the same module: uvicorn's own WSGI support is
                        deprecated in favour of a2wsgi)
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from _proc import alive, children, cpu_seconds, free_port, stop_session

ROOT = Path(__file__).resolve().parent.parent
APP = "examples.bench_apps:app"
#: What each server needs importable, besides the standard library.
NEEDS = {
    "prefork": ["prefork"],
    "prefork-auto": ["prefork"],
    "prefork-h11": ["prefork", "h11"],
    # prefork-auto from another source tree, for an A/B in one run:
    # git archive <commit> prefork | tar -x -C /tmp/base; PREFORK_BASE=/tmp/base python ...
    "prefork-base": ["prefork"],
    "uvicorn-h11": ["uvicorn", "h11", "uvloop"],
    "uvicorn-httptools": ["uvicorn", "httptools", "uvloop"],
    "gunicorn-uvicorn": ["gunicorn", "uvicorn", "httptools", "uvloop"],
    "gunicorn-asgi": ["gunicorn", "uvloop"],
    "granian": ["granian", "uvloop"],
    "hypercorn": ["hypercorn", "uvloop"],
    "prefork-wsgi": ["prefork"],
    "gunicorn-gthread": ["gunicorn"],
    "gunicorn-sync": ["gunicorn"],
    "granian-wsgi": ["granian"],
    "uvicorn-a2wsgi": ["uvicorn", "httptools", "uvloop", "a2wsgi"],
}
#: The body of the echo workload's POST, and wrk's request for it (wrk adds the
#: Content-Length).
ECHO_BODY = b"0123456789abcdef" * 4096  # 64 KiB
ECHO_SCRIPT = f"""\
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", {len(ECHO_BODY) // 16})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


def uvicorn_worker() -> str:
    """gunicorn's worker class for uvicorn: the uvicorn-worker package's when installed, else
    the one uvicorn still ships (deprecated in its favour)."""
    if importlib.util.find_spec("uvicorn_worker") is not None:
        return "uvicorn_worker.UvicornWorker"
    return "uvicorn.workers.UvicornWorker"


def command(
    name: str, port: int, workers: int, app: str = APP, extra: Sequence[str] = ()
) -> list[str]:
    """The command line of a server; ``extra`` options go before the app."""
    py, w = sys.executable, str(workers)
    host_port = ["--host", "127.0.0.1", "--port", str(port)]
    match name:
        case "prefork" | "prefork-auto" | "prefork-h11" | "prefork-base":
            return [
                py, "-m", "prefork", "serve", "--http", "h11" if name == "prefork-h11" else "auto",
                "--workers", w, "--log-level", "warning", "--no-access-log",
                "--bind", f"127.0.0.1:{port}", *extra, app,
            ]  # fmt: skip
        case "uvicorn-h11" | "uvicorn-httptools":
            return [
                py, "-m", "uvicorn", "--http", name.removeprefix("uvicorn-"), "--loop", "uvloop",
                "--workers", w, "--log-level", "warning", "--no-access-log", *host_port, *extra,
                app,
            ]  # fmt: skip
        case "gunicorn-uvicorn":
            # gunicorn writes no access log unless given --access-logfile.
            return [
                py, "-m", "gunicorn", "-k", uvicorn_worker(), "-w", w, "--log-level", "warning",
                "-b", f"127.0.0.1:{port}", *extra, app,
            ]  # fmt: skip
        case "gunicorn-asgi":
            return [
                py, "-m", "gunicorn", "-k", "asgi", "--asgi-loop", "uvloop", "-w", w,
                "--log-level", "warning", "-b", f"127.0.0.1:{port}", *extra, app,
            ]  # fmt: skip
        case "granian":
            return [
                py, "-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--http", "1",
                "--workers", w, "--log-level", "warning", "--no-access-log", *host_port, *extra,
                app,
            ]  # fmt: skip
        case "hypercorn":
            # hypercorn writes no access log unless given --access-logfile.
            return [
                py, "-m", "hypercorn", "--worker-class", "uvloop", "--workers", w,
                "--log-level", "warning", "--bind", f"127.0.0.1:{port}", *extra, app,
            ]  # fmt: skip
        case "prefork-wsgi":
            return [
                py, "-m", "prefork", "serve", "--interface", "wsgi", "--http", "auto",
                "--workers", w, "--log-level", "warning", "--no-access-log",
                "--bind", f"127.0.0.1:{port}", *extra, app,
            ]  # fmt: skip
        case "gunicorn-gthread" | "gunicorn-sync":
            return [
                py, "-m", "gunicorn", "-k", name.removeprefix("gunicorn-"), "-w", w,
                "--log-level", "warning", "-b", f"127.0.0.1:{port}", *extra, app,
            ]  # fmt: skip
        case "granian-wsgi":
            return [
                py, "-m", "granian", "--interface", "wsgi", "--http", "1", "--workers", w,
                "--log-level", "warning", "--no-access-log", *host_port, *extra, app,
            ]  # fmt: skip
        case "uvicorn-a2wsgi":
            return [
                py, "-m", "uvicorn", "--http", "httptools", "--loop", "uvloop", "--workers", w,
                "--log-level", "warning", "--no-access-log", *host_port, *extra, f"{app}_asgi",
            ]  # fmt: skip
    raise ValueError(f"no such server: {name}")


def wsgi_threads(name: str, threads: int) -> list[str]:
    """The options that give a WSGI server ``threads`` threads per worker. uvicorn-a2wsgi's
    come from BENCH_WSGI_THREADS, which examples/bench_wsgi_apps.py reads; gunicorn's sync
    worker has none to give."""
    match name:
        case "prefork-wsgi" | "gunicorn-gthread":
            return ["--threads", str(threads)]
        case "granian-wsgi":
            return ["--blocking-threads", str(threads)]
        case "uvicorn-a2wsgi" | "gunicorn-sync":
            return []
    raise ValueError(f"no such WSGI server: {name}")


def missing(name: str) -> str | None:
    """Why a server cannot run here, or None."""
    absent = [m for m in NEEDS[name] if importlib.util.find_spec(m) is None]
    if absent:
        return f"{', '.join(absent)} not installed"
    if name == "prefork-base" and not os.environ.get("PREFORK_BASE"):
        return "PREFORK_BASE (a source tree to compare with) is not set"
    if name == "gunicorn-asgi":
        major = int(importlib.metadata.version("gunicorn").split(".")[0])
        if major < 25:
            return f"gunicorn {major} has no asgi worker (needs >= 25)"
    return None


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


# -- the servers --------------------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    found = children(pid)
    for child in list(found):
        found |= descendants(child)
    return found


class Server:
    """A server in its own session, on ``cpus`` when given (``taskset -c``), run from a scratch
    directory (so that PYTHONPATH decides which prefork is measured), its stdout and stderr in
    a file. ``app``, ``extra`` (options) and ``pythonpath`` (directories put after the
    checkout) change what it serves; ``tag`` tells apart servers of the same name and workers
    in one ``workdir``."""

    def __init__(
        self,
        name: str,
        workers: int,
        cpus: str | None,
        workdir: Path,
        *,
        app: str = APP,
        extra: Sequence[str] = (),
        pythonpath: Sequence[str] = (),
        tag: str = "",
    ) -> None:
        self.name = name
        self.workers = workers
        self.label = name if workers == 1 else f"{name} -w {workers}"
        self.port = free_port()
        stem = f"{name}-w{workers}{tag}"
        self.ready_dir = workdir / f"{stem}.ready"
        self.ready_dir.mkdir()
        self.log = workdir / f"{stem}.log"
        path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if name == "prefork-base":
            path.insert(0, os.environ["PREFORK_BASE"])
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([*path, str(ROOT), *pythonpath]),
            BENCH_APPS_READY_DIR=str(self.ready_dir),
        )
        cmd = command(name, self.port, workers, app, extra)
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]  # taskset execs: proc.pid is the server
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def worker_pids(self) -> set[int]:
        """The live processes that have run the app's lifespan startup (and not its shutdown)."""
        return {int(p) for p in os.listdir(self.ready_dir) if alive(int(p))}

    def pids(self) -> set[int]:
        """The server's process and all its descendants."""
        return {self.proc.pid, *descendants(self.proc.pid)}

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll until every worker has run the app's lifespan startup and GET / answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.tail()}")
            started = self.worker_pids()
            if len(started) >= self.workers:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    if request(self.port, "GET", "/")[0] == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not ready after {timeout} s ({len(started)} of {self.workers} workers "
                    f"through lifespan startup): {self.tail()}"
                )
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """The CPU time of the server and all its processes."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += cpu_seconds(pid)
        return total

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self) -> str:
        text = self.text().strip()
        return f"\n{text[-2000:]}" if text else "(no output)"

    def stop(self) -> None:
        stop_session(self.proc)


def request(
    port: int, method: str, path: str, body: bytes = b"", close: bool = False
) -> tuple[int, bytes]:
    """One request on a new connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            method, path, body=body or None, headers={"Connection": "close"} if close else {}
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Asked(Protocol):
    """A workload's request, as the load generator sends it, and the size of its answer."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def close(self) -> bool: ...


def check(server: Server, workload: Asked) -> None:
    """The workload's request, as wrk sends it, must be answered 200 with the expected body."""
    body = ECHO_BODY if workload.method == "POST" else b""
    status, got = request(server.port, workload.method, workload.path, body, workload.close)
    if status != 200 or len(got) != workload.size:
        raise RuntimeError(
            f"{workload.method} {workload.path} answered {status} with {len(got)} bytes, "
            f"not 200 with {workload.size}: {got[:80]!r}"
        )
    if body and got != body:
        raise RuntimeError(f"POST {workload.path} echoed other bytes than it was sent")
    if workload.path == "/json":
        json.loads(got)


# -- measuring and reporting --------------------------------------------------------------


def table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, the first column left-aligned and the others right-aligned."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(head), rule, *(line(r) for r in rows)])

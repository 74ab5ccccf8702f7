"""How evenly the shared listening socket spreads connections and requests over HTTP workers.

    python benchmarks/accept_spread.py [--workers 4] [--trials 10] [--scenarios A B C]
    python benchmarks/accept_spread.py --tree old=/tmp/prefork_old --tree new=.   # compare

Starts ``prefork serve`` (``--workers 4``, 127.0.0.1, a port the OS picks) with an app that
answers its own pid, once per ``--tree`` (a source tree put first on PYTHONPATH; default: this
checkout), and runs, alternating over the trees trial by trial so that machine noise hits all
of them alike:

A. K keep-alive clients (``--clients 4 8 16``) connect at the same moment, each sends R
   requests and keeps its connection open until all are done. Reports connections and
   requests per worker, the coefficient of variation (CV, 0 = perfectly even) of connections
   per worker, the largest share, and how often a worker got no connection at all.
A'. The same with the K connections opened one after another, ``--stagger`` ms apart (a hot
   worker already running may keep winning the accept race).
B. Short connections (``Connection: close``) from ``--threads`` threads: requests per worker.
C. wrk ``-c50`` keep-alive and with ``-H "Connection: close"``: requests/s, plus each
   worker's share of the CPU time spent during the run (from /proc).

``--tree NAME=DIR,ENV=VALUE`` also sets environment variables for that server, so variants of
one tree behind an environment switch can be compared in the same run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from _proc import cpu_seconds, free_port
from _wire import REQUEST, read_response

ROOT = Path(__file__).resolve().parent.parent

APP = """
import os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""

REQUEST_CLOSE = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


class Server:
    """One ``prefork serve`` in its own process group."""

    def __init__(
        self, name: str, tree: Path, extra_env: dict[str, str], app_dir: str, workers: int
    ) -> None:
        self.name = name
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(tree), **extra_env)
        cmd = [
            sys.executable, "-m", "prefork", "serve", "--app-dir", app_dir, "pidapp:app",
            "-w", str(workers), "-b", f"127.0.0.1:{self.port}", "--log-level", "warning",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=tree, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.workers = workers

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: server exited with {self.proc.returncode}")
            if len(self.worker_pids()) == self.workers:
                try:
                    one_request(self.port)
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: not ready in {timeout} s")

    def worker_pids(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return sorted(int(p) for p in text.split())

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


def one_request(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(REQUEST_CLOSE)
        return int(read_response(sock)[1])  # the body is the worker's pid


# -- scenario A: keep-alive clients arriving together ----------------------------------------


def keep_alive_round(port: int, clients: int, requests: int, stagger: float) -> list[list[int]]:
    """Each client's list of answering pids (one connection each, ``requests`` requests)."""
    start = threading.Barrier(clients)
    done = threading.Barrier(clients)
    out: list[list[int]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            start.wait(timeout=10)
            if stagger:
                time.sleep(i * stagger)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                buf = b""
                for _ in range(requests):
                    sock.sendall(REQUEST)
                    _, pid, buf = read_response(sock, buf)
                    out[i].append(int(pid))
                done.wait(timeout=30)  # keep the connection open until every client is done
        except BaseException as exc:
            errors.append(exc)
            done.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"client failed: {errors[0]!r}")
    return out


def spread(counts: Counter[int], pids: list[int]) -> list[int]:
    return sorted((counts.get(pid, 0) for pid in pids), reverse=True)


def cv(values: list[int]) -> float:
    mean = statistics.mean(values)
    return statistics.pstdev(values) / mean if mean else 0.0


class Stats:
    """Per (tree, label): trial spreads, CVs, max shares, trials with an idle worker."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[list[int]]] = {}

    def add(self, tree: str, label: str, values: list[int]) -> None:
        self.rows.setdefault((tree, label), []).append(values)

    def report(self) -> None:
        labels = sorted({label for _, label in self.rows}, key=_label_key)
        trees = list(dict.fromkeys(tree for tree, _ in self.rows))
        for label in labels:
            print(f"\n{label}")
            for tree in trees:
                trials = self.rows.get((tree, label))
                if not trials:
                    continue
                cvs = [cv(v) for v in trials]
                shares = [max(v) / sum(v) for v in trials if sum(v)]
                zeros = sum(1 for v in trials if 0 in v)
                shown = " ".join("/".join(map(str, v)) for v in trials[:12])
                print(
                    f"  {tree:6} mean CV {statistics.mean(cvs):.2f}  max share "
                    f"{statistics.mean(shares):.2f}  idle worker in {zeros}/{len(trials)}"
                    f"   {shown}"
                )


def _label_key(label: str) -> tuple[str, int]:
    head, _, number = label.partition(" K=")
    digits = re.match(r"\d+", number)
    return head, int(digits.group(0)) if digits else 0


def scenario_a(
    server: Server, stats: Stats, clients: list[int], requests: int, stagger: float
) -> None:
    pids = server.worker_pids()
    for k in clients:
        for name, gap in (("A  together", 0.0), ("A' staggered", stagger)):
            if name.startswith("A'") and not stagger:
                continue
            answers = keep_alive_round(server.port, k, requests, gap)
            conns = Counter(a[0] for a in answers)
            reqs = Counter(pid for a in answers for pid in a)
            assert all(len(set(a)) == 1 for a in answers), "a connection changed worker"
            stats.add(server.name, f"{name} K={k}: connections per worker", spread(conns, pids))
            stats.add(server.name, f"{name} K={k}: requests per worker", spread(reqs, pids))
            time.sleep(0.2)  # let the workers see the connections close


# -- scenario B: short connections -----------------------------------------------------------


def scenario_b(server: Server, stats: Stats, threads: int, per_thread: int) -> None:
    counts: Counter[int] = Counter()
    lock = threading.Lock()

    def client() -> None:
        mine: Counter[int] = Counter()
        for _ in range(per_thread):
            mine[one_request(server.port)] += 1
        with lock:
            counts.update(mine)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    label = f"B  short connections, {threads} threads: requests per worker"
    stats.add(server.name, label, spread(counts, server.worker_pids()))


# -- scenario C: wrk ----------------------------------------------------------------------


def run_wrk(server: Server, duration: int, connections: int, close: bool) -> tuple[float, str]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://127.0.0.1:{server.port}/")
    pids = server.worker_pids()
    before = [cpu_seconds(p) for p in pids]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
    total = sum(used) or 1
    shares = "/".join(f"{100 * u / total:.0f}" for u in sorted(used, reverse=True))
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        shares += f"  (socket errors: {errors.group(1)})"
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    return float(match.group(1)), shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tree", action="append", default=[], help="NAME=DIR[,ENV=VALUE...] (repeatable)"
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--scenarios", nargs="*", default=["A", "B", "C"])
    parser.add_argument("--trials", type=int, default=10, help="rounds of A and B")
    parser.add_argument("--clients", type=int, nargs="*", default=[4, 8, 16])
    parser.add_argument("--requests", type=int, default=20, help="requests per client in A")
    parser.add_argument("--stagger", type=float, default=5.0, help="ms between A' connects")
    parser.add_argument("--threads", type=int, default=8, help="client threads in B")
    parser.add_argument("--per-thread", type=int, default=50, help="requests per thread in B")
    parser.add_argument("--wrk-rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50, help="wrk -c")
    args = parser.parse_args(argv)
    if "C" in args.scenarios and shutil.which("wrk") is None:
        print("install wrk: apt-get install wrk", file=sys.stderr)
        return 2
    trees = [parse_tree(t) for t in args.tree] or [("tree", str(ROOT), {})]
    stats = Stats()
    servers: list[Server] = []
    with tempfile.TemporaryDirectory() as app_dir:
        Path(app_dir, "pidapp.py").write_text(APP)
        try:
            for name, tree, extra_env in trees:
                servers.append(Server(name, Path(tree).resolve(), extra_env, app_dir, args.workers))
            for server in servers:
                server.wait_ready()
            run_trials(args, servers, stats)
        finally:
            for server in servers:
                server.stop()
    stats.report()
    return 0


def parse_tree(text: str) -> tuple[str, str, dict[str, str]]:
    """``NAME=DIR[,KEY=VALUE...]``: a source tree and extra environment for its server."""
    name, _, rest = text.partition("=")
    tree, *pairs = rest.split(",")
    return name, tree or str(ROOT), dict(pair.partition("=")[::2] for pair in pairs)


def run_trials(args: argparse.Namespace, servers: list[Server], stats: Stats) -> None:
    def alternate(round_no: int) -> list[Server]:
        return servers if round_no % 2 == 0 else servers[::-1]

    for scenario in ("A", "B"):
        if scenario not in args.scenarios:
            continue
        for trial in range(args.trials):
            for server in alternate(trial):
                if scenario == "A":
                    stagger = args.stagger / 1000
                    scenario_a(server, stats, args.clients, args.requests, stagger)
                else:
                    scenario_b(server, stats, args.threads, args.per_thread)
        print(f"scenario {scenario}: {args.trials} trials done", flush=True)
    if "C" not in args.scenarios:
        return
    results: dict[tuple[str, bool], list[float]] = {}
    for server in servers:
        run_wrk(server, 1, args.connections, False)  # warm up
    for round_no in range(args.wrk_rounds):
        for close in (False, True):
            for server in alternate(round_no):
                rps, shares = run_wrk(server, args.duration, args.connections, close)
                results.setdefault((server.name, close), []).append(rps)
                mode = "close     " if close else "keep-alive"
                print(
                    f"C round {round_no + 1} {mode} {server.name:6} {rps:9.0f} req/s"
                    f"   worker CPU % {shares}",
                    flush=True,
                )
    print()
    for (name, close), values in results.items():
        mode = "close     " if close else "keep-alive"
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"C {mode} {name:6} median {statistics.median(values):9.0f} req/s  ({runs})")


if __name__ == "__main__":
    sys.exit(main())

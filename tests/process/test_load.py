"""`prefork load` against a real `prefork serve`: the numbers it reports are the server's
(every request it counts was answered, and it misses at most the ones in flight at the end),
`--rate` sends what it says, `--json`'s last line, `--fail-on-error`, a scenario (one in the
working directory too), Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, MasterProcess, wait_until

pytestmark = pytest.mark.timeout(60)


def serve(start: Any, sock: socket.socket, tmp_path: Path) -> tuple[str, Path]:
    """A `prefork serve` of the hello app writing an access log; its URL and the log."""
    log = tmp_path / "access.log"
    port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
    argv += ["--workers", "1", "--access-logfile", str(log), "--app-dir", str(ROOT / "examples")]
    master = start([*argv, "hello:app"], pass_fds=[sock])
    wait_until(lambda: "is ready" in master.stderr(), 15, "the server")
    return f"http://127.0.0.1:{port}/", log


def load(start: Any, *argv: str, env: dict[str, str] | None = None) -> tuple[MasterProcess, int]:
    run = start([sys.executable, "-m", "prefork", "load", *argv], env=env)
    return run, run.wait_exit(30)


def summary(run: MasterProcess) -> dict[str, Any]:
    last = run.stdout().strip().splitlines()[-1]
    return json.loads(last)  # type: ignore[no-any-return]


def test_it_counts_what_the_server_answered(start: Any, sock: socket.socket, tmp_path: Path):
    url, log = serve(start, sock, tmp_path)
    run, code = load(start, url, "-c", "8", "-d", "1.5s", "-w", "2", "--json")
    assert code == 0
    result = summary(run)
    answered = wait_until(lambda: len(log.read_text().splitlines()), 5, "the access log")
    # every answer counted was the server's; at most one in flight per connection is not
    # (those are unanswered: in `requests`, with their wait up to the end)
    assert answered - 8 <= result["answered"] <= answered
    assert result["requests"] == result["answered"] + result["unanswered"]
    assert result["unanswered"] <= 8 and result["dropped"] == 0
    assert result["answered"] > 100 and result["status"] == {"200": result["answered"]}
    assert result["errors"] == {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0}
    assert result["duration_s"] == 1.5 and result["bytes"] > 0  # the run's, not its teardown
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p75"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert run.stderr().count("req/s") >= 1  # the live line, one a second


def test_an_open_loop_sends_rate_times_duration(start: Any, sock: socket.socket, tmp_path):
    url, _ = serve(start, sock, tmp_path)
    run, code = load(start, url, "--rate", "300", "-d", "2s", "-c", "4", "-w", "2", "--json")
    assert code == 0
    assert abs(summary(run)["requests"] - 600) <= 12  # within 2%


def test_a_ramp_of_the_arrival_rate_sends_its_integral(start: Any, sock: socket.socket, tmp_path):
    url, _ = serve(start, sock, tmp_path)
    argv = ["--rate", "100", "--stages", "0.5s:300,0.5s:0", "-c", "4", "-w", "2", "--json"]
    run, code = load(start, url, *argv)
    assert code == 0, run.stderr()
    result = summary(run)
    # (100 + 300) / 2 * 0.5 + 300 / 2 * 0.5 = 175 sends, over both workers, none lost
    assert result["requests"] == 175 and result["duration_s"] == 1.0
    assert result["config"]["stages"] == [[0.5, 300.0], [0.5, 0.0]]
    assert result["config"]["targets"] is None


def test_a_ramp_of_connections(start: Any, sock: socket.socket, tmp_path):
    url, _ = serve(start, sock, tmp_path)
    run, code = load(start, url, "--stages", "0.5s:4,0.5s:4", "-w", "2")
    assert code == 0, run.stderr()
    out = run.stdout()
    assert "  2 workers and 4 connections, stages 0.5s:4,0.5s:4" in out
    assert "Corrected" not in out  # wrk's correction wants a constant number of connections
    assert "  Connect    4 connections" in out


def test_a_file_of_targets_is_sent_in_turn(start: Any, sock: socket.socket, tmp_path: Path):
    url, log = serve(start, sock, tmp_path)
    (tmp_path / "body.txt").write_text("hello")
    (tmp_path / "targets.txt").write_text(
        f"GET {url}a\nX-Test: 1\n\nPOST {url}b?x=1\n@{tmp_path / 'body.txt'}\n"
    )
    argv = [url, "--targets", str(tmp_path / "targets.txt"), "-c", "4", "-d", "1s", "-w", "2"]
    run, code = load(start, *argv, "--json")
    assert code == 0, run.stderr()
    assert summary(run)["answered"] > 50
    lines = wait_until(lambda: log.read_text().splitlines(), 5, "the access log")
    a, b = sum("GET /a " in line for line in lines), sum("POST /b?x=1 " in line for line in lines)
    assert a + b == len(lines) and abs(a - b) <= 4  # in turn in each worker


def test_an_hdr_log_adds_up_to_the_run(start: Any, sock: socket.socket, tmp_path: Path):
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader

    url, _ = serve(start, sock, tmp_path)
    log = tmp_path / "run.hlog"
    argv = [url, "-c", "4", "-d", "2.5s", "-w", "2", "--hdr-log", str(log), "--json"]
    run, code = load(start, *argv)
    assert code == 0, run.stderr()
    reader = HistogramLogReader(str(log), HdrHistogram(1, 3_600_000_000, 2))
    counts = []
    while (interval := reader.get_next_interval_histogram()) is not None:
        counts.append(interval.get_total_count())
    assert 2 <= len(counts) <= 4 and all(counts)  # seconds 1 and 2, then the last half
    assert sum(counts) == summary(run)["requests"]


def test_wrks_summary_and_fail_on_error(start: Any, tmp_path: Path):
    nobody = socket.socket()
    nobody.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    url = f"http://127.0.0.1:{nobody.getsockname()[1]}/"
    with nobody:
        run, code = load(start, url, "-c", "2", "-d", "0.5s", "-w", "1", "--fail-on-error")
    assert code == 1
    out = run.stdout()
    assert out.startswith(f"Running 0.5s test @ {url}\n  1 worker and 2 connections")
    assert "Requests/sec:" in out and "Errors: connect " in out and "Status: none" in out
    run, code = load(start, url, "-c", "1", "-d", "0.2s", "-w", "1")
    assert code == 1  # nothing succeeded: a failure, as wrk says
    assert run.stderr().strip().splitlines()[-1] == "prefork: error: no request succeeded"


def test_a_scenario_runs_its_requests_on_each_connection(
    start: Any, sock: socket.socket, tmp_path: Path
):
    url, log = serve(start, sock, tmp_path)
    (tmp_path / "scen.py").write_text(
        "async def visit(client):\n"
        "    first = await client.get('/a', name='first')\n"
        "    assert first.status == 200\n"
        "    await client.request('GET', '/b?q=1')\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    run, code = load(
        start,
        url,
        "--scenario",
        "scen:visit",
        "-c",
        "2",
        "-d",
        "1s",
        "-w",
        "1",
        "--json",
        env=env,
    )
    assert code == 0, run.stderr()
    result = summary(run)
    lines = log.read_text().splitlines()
    assert result["requests"] > 10 and result["errors"]["read"] == 0
    assert sum("/a " in line for line in lines) - sum("/b?q=1 " in line for line in lines) <= 2
    steps = result["steps"]
    assert list(steps) == ["first", "GET /b"]  # named, or grouped by method and path
    assert sum(step["requests"] for step in steps.values()) == result["requests"]
    assert steps["first"]["errors"] == 0 and 0 < steps["first"]["p50"] <= steps["first"]["max"]


def test_a_scenario_in_the_working_directory_imports(
    start: Any, sock: socket.socket, tmp_path: Path
):
    url, _ = serve(start, sock, tmp_path)
    here = tmp_path / "here"
    here.mkdir()
    (here / "beside.py").write_text("async def run(client):\n    await client.request()\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # -P: no working directory on sys.path from Python itself, as with the `prefork` script
    argv = [sys.executable, "-P", "-m", "prefork", "load", url, "--scenario", "beside:run"]
    argv += ["-d", "0.5s", "-w", "1", "-c", "1", "--json"]
    done = subprocess.run(argv, cwd=here, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["requests"] > 0


@pytest.mark.parametrize("ctrl_c", [True, False])
def test_ctrl_c_or_sigterm_ends_the_run_with_its_summary_and_no_warning(
    start: Any, sock: socket.socket, tmp_path: Path, ctrl_c: bool
):
    url, _ = serve(start, sock, tmp_path)
    run = start([sys.executable, "-m", "prefork", "load", url, "-d", "60s", "-w", "2", "-c", "2"])
    wait_until(lambda: "req/s" in run.stderr(), 15, "a progress line")
    if ctrl_c:
        os.killpg(run.pid, signal.SIGINT)  # a terminal's: the master and its workers
    else:
        run.signal(signal.SIGTERM)  # a stop too: a drained load master would wait for nothing
    assert run.wait_exit(20) == 0
    assert "Requests/sec:" in run.stdout()
    assert "WARNING" not in run.stderr() and "Traceback" not in run.stderr(), run.stderr()


def test_bad_input_is_one_line(start: Any):
    run, code = load(start, "127.0.0.1:1")
    assert code == 2
    assert run.stderr().strip().splitlines() == [
        "prefork: error: url '127.0.0.1:1' must be http[s]://HOST[:PORT]/PATH "
        "(did you mean 'http://127.0.0.1:1'?)"
    ]
    run, code = load(start, "http://x/", "--scenario", "no_such_module:f")
    assert code == 2 and "No module named 'no_such_module'" in run.stderr()


def test_a_worker_that_crashes_ends_the_run_and_fails_it(start: Any, sock: socket.socket, tmp_path):
    url, _ = serve(start, sock, tmp_path)
    (tmp_path / "crash.py").write_text("import os\nasync def boom(client):\n    os._exit(3)\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    argv = [url, "--scenario", "crash:boom", "-d", "30s", "-w", "1", "--fail-on-error"]
    run, code = load(start, *argv, env=env)
    assert code == 1
    assert "prefork: error: worker 1 crashed (code 3, signal None)" in run.stderr()


def test_thresholds_fail_the_run_with_their_own_exit_code(
    start: Any, sock: socket.socket, tmp_path: Path
):
    url, _ = serve(start, sock, tmp_path)
    argv = [url, "-c", "2", "-d", "0.5s", "-w", "1", "--threshold", "p99<5000ms"]
    run, code = load(start, *argv, "--threshold", "p99<0.001ms", "--threshold", "errors<1%")
    assert code == 99
    (broken,) = [line for line in run.stderr().splitlines() if "threshold" in line]
    assert broken.startswith("prefork: threshold broken: p99<0.001ms (measured ")
    run, code = load(start, *argv, "--json")
    assert code == 0 and "thresholds_broken" not in summary(run)


def test_a_scenario_at_a_rate_and_start_at(start: Any, sock: socket.socket, tmp_path: Path):
    url, _ = serve(start, sock, tmp_path)
    (tmp_path / "scen.py").write_text("async def run(client):\n    await client.request()\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    argv = [url, "--scenario", "scen:run", "--rate", "100", "-d", "1s", "-c", "4", "-w", "2"]
    run, code = load(start, *argv, "--json", "--start-at", "+1s", env=env)
    assert code == 0, run.stderr()
    result = summary(run)
    assert 98 <= result["requests"] <= 102 and result["config"]["rate"] == 100
    assert result["ended"] - result["started"] >= 1.0  # it waited, then ran a second


def test_a_scenario_that_blocks_its_loop_fails_the_run_and_says_where(
    start: Any, sock: socket.socket, tmp_path: Path
):
    url, _ = serve(start, sock, tmp_path)
    (tmp_path / "blocks.py").write_text(
        "import time\nasync def run(client):\n    await client.request()\n    time.sleep(60)\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    argv = [url, "--scenario", "blocks:run", "-d", "1s", "-w", "1", "-c", "1", "--timeout", "1s"]
    run, code = load(start, *argv, env=env)
    assert code == 1
    err = run.stderr()
    assert 'blocks.py", line 4 in run' in err  # the master's dump of the hung worker's stack
    (said,) = [line for line in err.splitlines() if line.startswith("prefork: error:")]
    assert said.startswith("prefork: error: worker 1 stopped answering the master and was killed")


def _limited(soft: int, hard: int, *argv: str) -> list[str]:
    """``prefork load ARGV`` under an open-files limit of ``soft``/``hard``."""
    code = (
        "import os, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'prefork', 'load', *sys.argv[1:]])\n"
    )
    return [sys.executable, "-c", code, *argv]


def test_many_connections_raise_the_soft_fd_limit_or_are_refused_in_one_line(
    start: Any, sock: socket.socket, tmp_path: Path
):
    url, _ = serve(start, sock, tmp_path)
    argv = [url, "-c", "400", "-d", "0.5s", "-w", "1", "--json"]
    run = start(_limited(256, 4096, *argv))
    assert run.wait_exit(30) == 0, run.stderr()
    assert summary(run)["errors"]["connect"] == 0
    run = start(_limited(256, 256, *argv))
    assert run.wait_exit(30) == 2
    assert run.stderr().strip().splitlines() == [
        "prefork: error: 400 connections per worker need 464 open files, and the hard limit is "
        "256: raise it (ulimit -Hn, LimitNOFILE=) or use more workers (-w) or fewer "
        "connections (-c)"
    ]

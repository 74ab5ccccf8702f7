"""Bad input fails before anything forks; sockets, pidfile, log files and the example."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from helpers import ROOT, alive, listener, wait_until

from prefork import ConfigError, Master, Worker
from prefork.master import _process

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def no_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    def fork() -> int:
        raise AssertionError("nothing may fork on bad input")

    monkeypatch.setattr(os, "fork", fork)


def one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_unknown_master_option(no_fork):
    with pytest.raises(ConfigError) as exc:
        Master(workers=3)
    assert "unknown Master option 'workers'; known options: graceful_timeout" in one_line(exc)


def test_bad_address(no_fork):
    master = Master()
    with pytest.raises(ConfigError) as exc:
        master.broker("echo", Worker, listen=["localhost"])
    assert one_line(exc).startswith("bad address 'localhost'")


def test_worker_spec_that_does_not_import(no_fork):
    master = Master()
    with pytest.raises(ConfigError) as exc:
        master.broker("echo", "no_such_module_anywhere:Echo")
    assert "cannot be imported: no module named 'no_such_module_anywhere'" in one_line(exc)


def test_address_in_use_fails_before_forking_and_closes_what_was_bound(no_fork):
    taken = listener()
    port = taken.getsockname()[1]
    master = Master()
    first = master.broker("first", Worker, listen=["127.0.0.1:0"])
    master.broker("second", Worker, listen=[f"127.0.0.1:{port}"])
    assert first.workers == 1 and not first.draining
    assert (first.status["desired"], first.status["live"]) == (1, 0)
    first.send("nobody listens yet")  # before run(): nothing to deliver to
    with pytest.raises(ConfigError) as exc:
        master.run()
    assert "address already in use" in one_line(exc)
    assert master._sockets == {}
    taken.close()


def test_preload_that_fails_to_import(no_fork, tmp_path, monkeypatch):
    (tmp_path / "broken_preload.py").write_text("raise ImportError('missing dependency')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    master = Master()
    master.broker("echo", "broken_preload:Echo", preload=True)
    with pytest.raises(ConfigError) as exc:
        master.run()
    assert "cannot preload 'broken_preload:Echo': missing dependency" in one_line(exc)


def test_master_without_brokers(no_fork):
    with pytest.raises(ConfigError) as exc:
        Master().run()
    assert "no brokers" in one_line(exc)


def test_example_with_address_in_use_prints_one_line_and_exits_2(start):
    taken = listener()
    port = taken.getsockname()[1]
    example = start([sys.executable, str(ROOT / "examples" / "brokers.py"), f"127.0.0.1:{port}"])
    assert example.wait_exit(10) == 2
    assert example.stderr().splitlines() == [
        f"error: cannot bind '127.0.0.1:{port}': address already in use; "
        "stop what holds it or choose another address"
    ]
    assert "worker_ready" not in example.stdout()
    taken.close()


def test_example_with_bad_address_exits_2(start):
    example = start([sys.executable, str(ROOT / "examples" / "brokers.py"), "nowhere"])
    assert example.wait_exit(10) == 2
    assert example.stderr().startswith("error: bad address 'nowhere'")


def test_example_runs_both_brokers_and_obeys_signals(start, sock):
    port = sock.getsockname()[1]
    argv = [sys.executable, str(ROOT / "examples" / "brokers.py")]
    example = start(argv, pass_fds=[sock], env={"ECHO_LISTEN": f"fd://{sock.fileno()}"})
    wait_until(lambda: example.stdout().count("worker_ready") == 3, 5)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
        conn.sendall(b"hello\n")
        assert conn.makefile().readline().endswith("] hello\n")
    wait_until(lambda: "worker_message jobs" in example.stdout(), 5)
    example.signal(signal.SIGHUP)
    wait_until(lambda: example.stdout().count("reload_done") == 2, 10)
    example.signal(signal.SIGTERM)
    wait_until(lambda: example.stdout().count("worker_exit") == 6, 10)
    example.signal(signal.SIGUSR2)
    wait_until(lambda: example.stdout().count("worker_ready") == 9, 5)
    example.signal(signal.SIGINT)
    assert example.wait_exit(15) == 0
    assert "worker_crash" not in example.stdout()


def test_unix_socket_pidfile_log_reopen_and_preload(start, tmp_path):
    path = tmp_path / "echo.sock"
    pidfile = tmp_path / "master.pid"
    log = tmp_path / "master.log"
    config = {
        "master": {"pidfile": str(pidfile), "umask": 0o027},
        "log_file": str(log),
        "brokers": [
            {"type": "echo", "worker": "workers:Echo", "listen": [f"unix:{path}"]},
            {"type": "jobs", "worker": "workers:Jobs", "preload": True, "interval": 60},
            {"type": "idle", "worker": "workers:Idle", "timeout": 0},
        ],
    }
    master = start(config)
    master.wait_ready(3)
    assert pidfile.read_text() == f"{master.pid}\n"
    assert path.stat().st_mode & 0o777 == 0o640  # 0o666 less the umask option
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(3)
        conn.connect(str(path))
        conn.sendall(b"ping\n")
        assert conn.makefile().readline().startswith("pong")
    assert f"echo x1 on unix:{path}" in log.read_text()
    log.rename(tmp_path / "master.log.1")  # as logrotate does; SIGUSR1 reopens the file
    master.signal(signal.SIGUSR1)
    wait_until(log.exists, 5, "the log file is reopened")
    master.signal(signal.SIGTTIN)
    wait_until(lambda: log.read_text().count("scaled to 2 worker(s)") == 3, 5)
    assert "signal: reopen logs" in (tmp_path / "master.log.1").read_text()
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0
    assert not pidfile.exists() and not path.exists()


def test_socket_file_removed_under_a_running_master(start, tmp_path):
    path = tmp_path / "echo.sock"
    master = start(
        {"brokers": [{"type": "echo", "worker": "workers:Echo", "listen": [f"unix:{path}"]}]}
    )
    master.wait_ready(1)
    path.unlink()  # someone cleaned up too eagerly: the master still stops cleanly
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0


def run_in_child(fn) -> int:  # type: ignore[no-untyped-def]
    """Run ``fn`` in a forked child; return its exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child leaves through os._exit in fn)
        fn()
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_worker_forked_after_its_master_died_leaves_at_once(monkeypatch):
    """die_with_parent: if the parent is already gone (getppid differs), leave with 1."""
    assert run_in_child(lambda: _process.die_with_parent(os.getppid() + 1_000_000)) == 1
    monkeypatch.setattr(sys, "platform", "darwin")  # no prctl there: only the getppid check
    assert run_in_child(lambda: _process.die_with_parent(os.getppid())) == 0
    assert alive(os.getpid())


def test_identity_names_and_numbers():
    assert _process.identity(None, None) == _process.Identity(None, None)
    assert _process.identity("root", None) == _process.Identity(0, 0)
    assert _process.identity("0", "65534") == _process.Identity(0, 65534)
    assert _process.identity("nobody", "nogroup") == _process.Identity(65534, 65534)
    with pytest.raises(ConfigError, match="unknown user 'no-such-user-q'"):
        _process.identity("no-such-user-q", None)
    with pytest.raises(ConfigError, match="unknown group '99999'"):
        _process.identity(None, "99999")
    with pytest.raises(ConfigError, match="unknown group '99999999999999999999'"):
        _process.identity(None, "99999999999999999999")
    with pytest.raises(ConfigError, match="unknown user '\u00b2'"):
        _process.identity("\u00b2", None)
    with pytest.raises(ConfigError, match="unknown user '99999999999999999999'"):
        _process.identity("99999999999999999999", None)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a process's group needs root")
def test_a_worker_takes_on_the_configured_group(start, sock):
    """-u/-g: the workers run as the given user and group; the master stays as it is. (The
    user stays root here: a worker must still write its coverage data where root does.)"""
    master = start(
        {
            "master": {"user": "0", "group": "nogroup"},
            "brokers": [
                {"type": "echo", "worker": "workers:Echo", "listen": [f"fd://{sock.fileno()}"]}
            ],
        },
        pass_fds=[sock],
    )
    (pid,) = master.wait_ready(1)

    def ids(p: int) -> tuple[str, str]:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines()
        )
        return status["Uid"].split()[0], status["Gid"].split()[0]

    assert ids(pid) == ("0", "65534")
    assert ids(master.pid) == ("0", "0")


def test_an_identity_is_assumed_in_a_child():
    def become() -> None:
        _process.Identity(0, 65534).assume()
        os._exit(0 if (os.getgid(), os.getgroups()) == (65534, [65534]) else 3)

    assert run_in_child(become) == (0 if os.geteuid() == 0 else 1)
    assert run_in_child(_process.Identity().assume) == 0  # nothing to change


def test_a_worker_whose_start_raises_prints_it_and_exits_1(capfd):
    """Whatever escapes a worker's run (an identity it may not take, say) is printed and the
    child leaves with 1, never returning into the master's code."""

    def boom() -> int:
        raise PermissionError("may not become that user")

    pid = _process.fork_worker(boom, [], lambda: None)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 1
    assert "PermissionError: may not become that user" in capfd.readouterr().err


def test_a_name_shows_in_ps_for_the_master_and_its_workers(start, sock):
    listen = [f"fd://{sock.fileno()}"]
    master = start(
        {
            "master": {"name": "shop"},
            "brokers": [{"type": "echo", "worker": "workers:Echo", "listen": listen}],
        },
        pass_fds=[sock],
    )
    (pid,) = master.wait_ready(1)
    assert Path(f"/proc/{master.pid}/comm").read_text() == "shop\n"
    assert Path(f"/proc/{pid}/comm").read_text() == "shop:echo\n"

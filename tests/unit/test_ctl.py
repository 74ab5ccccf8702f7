"""``prefork ctl`` against a fake master: a unix socket in tmp_path served by a thread that
records every request line and answers from a script (or misbehaves on cue)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import socket
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prefork import cli
from prefork.ops import _ctl
from prefork.ops._ctl_view import span, status_table, took

CLOSE = object()  # close the connection instead of answering
OK: dict[str, Any] = {"v": 1, "ok": True}


@dataclass
class Delay:
    seconds: float
    answer: Any


@dataclass
class Partial:
    """Send these bytes, then close the connection."""

    data: bytes


class FakeMaster:
    """Listens on ``path``; for each request line, takes the next step of ``script``: a dict
    (answered as one JSON line), bytes (sent as they are), ``Delay``, ``Partial`` or
    ``CLOSE``. When the script runs out, the connection closes. A connection that sends
    nothing (the runtime dir's liveness probe) is simply closed."""

    def __init__(self, path: Path, script: list[Any]) -> None:
        self.path = str(path)
        self.script = script
        self.lines: list[bytes] = []
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen()
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def requests(self) -> list[Any]:
        return [json.loads(line) for line in self.lines]

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):  # the client may leave first
                conn.settimeout(5)
                self._talk(conn)

    def _talk(self, conn: socket.socket) -> None:
        for line in conn.makefile("rb"):
            self.lines.append(line)
            if not self.script:
                return
            step = self.script.pop(0)
            if isinstance(step, Delay):
                self._stopping.wait(step.seconds)
                step = step.answer
            if step is CLOSE:
                return
            if isinstance(step, Partial):
                conn.sendall(step.data)
                return
            conn.sendall(step if isinstance(step, bytes) else json.dumps(step).encode() + b"\n")


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Callable[..., FakeMaster]]:
    started: list[FakeMaster] = []

    def start(*script: Any, path: Path | None = None) -> FakeMaster:
        fake = FakeMaster(path or tmp_path / "m.ctl", list(script))
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


def ctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["ctl", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def at(fake: FakeMaster, *argv: str) -> list[str]:
    return ["--control", fake.path, *argv]


STATUS: dict[str, Any] = {
    "pid": 4242,
    "version": "0.1.0",
    "started": 1700005000.0,
    "master_started": 1700000000.0,
    "upgrades": 2,
    "uptime": 5533.2,
    "control": "/run/user/1000/prefork/4242.ctl",
    "metrics": "127.0.0.1:9100",
    "brokers": {
        "http": {
            "desired": 2,
            "live": 3,
            "generation": 4,
            "draining": False,
            "reloading": True,
            "failures": 0,
            "backoff": 0.0,
            "started": 7,
            "restarts": 5,
            "crashes": 1,
            "last_reload": {
                "generation": 4,
                "result": "running",
                "reason": "",
                "replaced": 1,
                "duration": 0.83,
                "ago": 0.83,
            },
            "workers": [
                {
                    "id": 5,
                    "pid": 4301,
                    "generation": 3,
                    "state": "stopping",
                    "uptime": 192.4,
                    "requests": 104211,
                    "connections": 3,
                    "rss": 24182784,
                },
                {
                    "id": 8,
                    "pid": 4388,
                    "generation": 4,
                    "state": "ready",
                    "uptime": 0.6,
                    "requests": 12,
                    "connections": 1,
                    "rss": 23011328,
                },
                {
                    "id": 9,
                    "pid": 4391,
                    "generation": 4,
                    "state": "booting",
                    "uptime": 0.1,
                    "requests": None,
                    "connections": None,
                    "rss": 9961472,
                },
            ],
        },
        "jobs": {
            "desired": 1,
            "live": 0,
            "generation": 2,
            "draining": True,
            "reloading": False,
            "failures": 3,
            "backoff": 2.5,
            "started": 4,
            "restarts": 3,
            "crashes": 3,
            "last_reload": {
                "generation": 2,
                "result": "failed",
                "reason": "worker 7 exited with code 1 before it was ready",
                "replaced": 0,
                "duration": 2.14,
                "ago": 312.0,
            },
            "workers": [],
        },
        "cron": {
            "desired": 1,
            "live": 1,
            "generation": 1,
            "draining": False,
            "reloading": False,
            "failures": 0,
            "backoff": 0.0,
            "started": 1,
            "restarts": 0,
            "crashes": 0,
            "last_reload": None,
            "workers": [
                {
                    "id": 1,
                    "pid": 4250,
                    "generation": 1,
                    "state": "ready",
                    "uptime": 5530.0,
                    "requests": None,
                    "connections": None,
                    "rss": None,
                }
            ],
        },
        "mail": {
            "desired": 1,
            "live": 1,
            "generation": 2,
            "draining": False,
            "reloading": False,
            "failures": 0,
            "backoff": 0.0,
            "started": 2,
            "restarts": 1,
            "crashes": 0,
            "last_reload": {
                "generation": 2,
                "result": "done",
                "reason": "",
                "replaced": 1,
                "duration": 1.42,
                "ago": 4000.0,
            },
            "workers": [
                {
                    "id": 2,
                    "pid": 4260,
                    "generation": 2,
                    "state": "hung",
                    "uptime": 100000.0,
                    "requests": 7,
                    "connections": 0,
                    "rss": 1048576,
                }
            ],
        },
    },
}

TABLE = """\
prefork master 4242  version 0.1.0  up 1h32m (upgraded 2x, this image up 8m53s)  \
control /run/user/1000/prefork/4242.ctl  metrics 127.0.0.1:9100

http  3/2 workers  gen 4  reloading (1 replaced, 830ms so far)  restarts 5  crashes 1
  ID   PID  GEN  STATE     UPTIME  REQUESTS  CONNS  RSS MiB
   5  4301    3  stopping   3m12s    104211      3     23.1
   8  4388    4  ready         0s        12      1     21.9
   9  4391    4  booting       0s         -      -      9.5

jobs  0/1 workers  gen 2  draining  restarts 3  crashes 3  backoff 2.5s (3 failures)  \
last reload: gen 2 failed after 2.1s, 5m12s ago
  rolled back: worker 7 exited with code 1 before it was ready
  (no workers)

cron  1/1 workers  gen 1  restarts 0  crashes 0  no reload yet
  ID   PID  GEN  STATE     UPTIME  REQUESTS  CONNS  RSS MiB
   1  4250    1  ready      1h32m         -      -        -

mail  1/1 workers  gen 2  restarts 1  crashes 0  last reload: gen 2 done in 1.4s, 1h06m ago
  ID   PID  GEN  STATE     UPTIME  REQUESTS  CONNS  RSS MiB
   2  4260    2  hung       1d03h         7      0      1.0
"""


# --- status ---------------------------------------------------------------------------


def test_status_prints_the_table(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    fake = master({**OK, "status": STATUS})
    assert ctl(capsys, *at(fake, "status")) == (0, TABLE, "")
    assert fake.lines == [b'{"v": 1, "cmd": "status"}\n']


def test_status_json_is_the_status_object_pretty_printed(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    fake = master({**OK, "status": STATUS})
    code, out, err = ctl(capsys, *at(fake, "status", "--json"))
    assert (code, err) == (0, "")
    assert out == json.dumps(STATUS, indent=2) + "\n"
    assert json.loads(out) == STATUS
    assert fake.requests == [{"v": 1, "cmd": "status"}]


def test_the_socket_flags_may_follow_the_action(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    fake = master({**OK, "status": STATUS})
    assert ctl(capsys, "status", "--control", fake.path) == (0, TABLE, "")


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """``--watch``'s pauses, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(_ctl, "sleep", slept.append)
    return slept


def test_watch_prints_a_table_a_second_until_the_master_leaves(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster], sleeps: list[float]
) -> None:
    fake = master({**OK, "status": STATUS}, {**OK, "status": STATUS})
    code, out, err = ctl(capsys, *at(fake, "status", "--watch"))
    assert code == 2
    assert out == TABLE + "\n" + TABLE  # not a terminal: one table after another
    assert err == (
        f"prefork: error: the master at {fake.path} closed the connection before answering "
        "(did it stop? see its log)\n"
    )
    assert fake.requests == [{"v": 1, "cmd": "status"}] * 3  # over one connection
    assert len(sleeps) == 2 and all(0.9 < s <= 1.0 for s in sleeps)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watch_redraws_a_terminal_until_ctrl_c(
    monkeypatch: pytest.MonkeyPatch, master: Callable[..., FakeMaster], sleeps: list[float]
) -> None:
    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(_ctl, "sleep", sleep)
    screen = Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    fake = master({**OK, "status": STATUS}, {**OK, "status": STATUS})
    assert cli.main(["ctl", *at(fake, "status", "--watch")]) == 0
    assert screen.getvalue() == ("\x1b[H\x1b[J" + TABLE) * 2


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_watch_into_a_pipe_whose_reader_left(
    monkeypatch: pytest.MonkeyPatch, master: Callable[..., FakeMaster], sleeps: list[float]
) -> None:
    """``prefork ctl status --watch | head``: quiet, exit 0."""
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    fake = master({**OK, "status": STATUS})
    assert cli.main(["ctl", *at(fake, "status", "--watch")]) == 0


def test_watch_json_prints_one_line_a_second(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster], sleeps: list[float]
) -> None:
    fake = master({**OK, "status": STATUS}, {**OK, "status": {"pid": 1}})
    code, out, _ = ctl(capsys, *at(fake, "status", "--watch", "--json"))
    assert code == 2
    assert out == json.dumps(STATUS) + "\n" + '{"pid": 1}\n'


def test_watch_stops_when_the_master_refuses(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster], sleeps: list[float]
) -> None:
    fake = master({**OK, "status": STATUS}, {"v": 1, "ok": False, "error": "shutting down"})
    code, out, err = ctl(capsys, *at(fake, "status", "--watch"))
    assert (code, out, err) == (1, TABLE, "prefork: error: shutting down\n")


def test_a_status_that_is_not_an_object(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    fake = master({**OK, "status": [1, 2]})
    code, out, err = ctl(capsys, *at(fake, "status"))
    assert (code, out) == (2, "")
    assert err == (
        f"prefork: error: the master at {fake.path} answered a status of [1, 2], not an "
        "object; is its prefork the same version as this one?\n"
    )


# --- reload, drain, resume, scale, stop ---------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "request_", "said"),
    [
        (
            ["reload"],
            {"v": 1, "cmd": "reload", "broker": None, "wait": False},
            "reload of every broker started (prefork ctl status shows how it goes)",
        ),
        (
            ["reload", "http"],
            {"v": 1, "cmd": "reload", "broker": "http", "wait": False},
            "reload of http started (prefork ctl status shows how it goes)",
        ),
        (["drain"], {"v": 1, "cmd": "drain", "broker": None}, "draining every broker"),
        (["drain", "jobs"], {"v": 1, "cmd": "drain", "broker": "jobs"}, "draining jobs"),
        (["resume"], {"v": 1, "cmd": "resume", "broker": None}, "resuming every broker"),
        (["resume", "jobs"], {"v": 1, "cmd": "resume", "broker": "jobs"}, "resuming jobs"),
        (
            ["scale", "http", "3"],
            {"v": 1, "cmd": "scale", "broker": "http", "workers": 3},
            "scaling http to 3 worker(s)",
        ),
        (
            ["scale", "http", "0"],
            {"v": 1, "cmd": "scale", "broker": "http", "workers": 0},
            "scaling http to 0 worker(s)",
        ),
        (
            ["scale", "http", "0" * 5000 + "1024"],
            {"v": 1, "cmd": "scale", "broker": "http", "workers": 1024},
            "scaling http to 1024 worker(s)",
        ),
        (
            ["stop"],
            {"v": 1, "cmd": "stop"},
            "stopping the master: it drains every worker, then exits",
        ),
    ],
)
def test_commands_send_their_request_and_confirm_in_one_line(
    capsys: pytest.CaptureFixture[str],
    master: Callable[..., FakeMaster],
    argv: list[str],
    request_: dict[str, Any],
    said: str,
) -> None:
    fake = master(OK)
    assert ctl(capsys, *at(fake, *argv)) == (0, said + "\n", "")
    assert fake.requests == [request_]


def test_a_refused_command_exits_1_with_the_masters_reason(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    error = "no broker named 'x'; brokers: http, jobs"
    fake = master({"v": 1, "ok": False, "error": error})
    assert ctl(capsys, *at(fake, "drain", "x")) == (1, "", f"prefork: error: {error}\n")


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ({"v": 1, "ok": False, "error": "two\nlines"}, "two lines"),
        ({"v": 1, "ok": False}, "the master refused, and gave no reason"),
    ],
)
def test_a_refusal_is_one_line_even_without_a_reason(
    capsys: pytest.CaptureFixture[str],
    master: Callable[..., FakeMaster],
    answer: dict[str, Any],
    said: str,
) -> None:
    fake = master(answer)
    assert ctl(capsys, *at(fake, "stop")) == (1, "", f"prefork: error: {said}\n")


def reload_(broker: str, generation: int, result: str, replaced: int, took: float) -> Any:
    reason = "" if result == "done" else "worker 7 exited with code 1 before it was ready"
    return {
        "broker": broker,
        "generation": generation,
        "result": result,
        "reason": reason,
        "replaced": replaced,
        "duration": took,
    }


def test_reload_wait_says_what_was_replaced(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    fake = master(
        {**OK, "reloads": [reload_("http", 3, "done", 2, 1.42), reload_("jobs", 5, "done", 1, 75)]}
    )
    code, out, err = ctl(capsys, *at(fake, "reload", "--wait"))
    assert (code, err) == (0, "")
    assert out == (
        "reload done: http generation 3, 2 worker(s) replaced in 1.4s\n"
        "reload done: jobs generation 5, 1 worker(s) replaced in 1m15s\n"
    )
    assert fake.requests == [{"v": 1, "cmd": "reload", "broker": None, "wait": True}]


def test_reload_wait_rolled_back_exits_1_with_the_reason(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    error = "reload of http rolled back: worker 7 exited with code 1 before it was ready"
    reloads = [reload_("jobs", 5, "done", 1, 0.5), reload_("http", 3, "failed", 0, 2.0), "?"]
    fake = master({"v": 1, "ok": False, "error": error, "reloads": reloads})
    code, out, err = ctl(capsys, *at(fake, "reload", "--wait"))
    assert code == 1
    assert out == "reload done: jobs generation 5, 1 worker(s) replaced in 500ms\n"
    assert err == f"prefork: error: {error}\n"


def test_reload_wait_of_one_broker_without_reloads_listed(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    fake = master(OK)
    assert ctl(capsys, *at(fake, "reload", "--wait", "http")) == (0, "", "")
    assert fake.requests == [{"v": 1, "cmd": "reload", "broker": "http", "wait": True}]


def test_reload_wait_waits_longer_than_an_answer_may_take(
    capsys: pytest.CaptureFixture[str],
    master: Callable[..., FakeMaster],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_ctl, "ANSWER_TIMEOUT", 0.05)
    fake = master(Delay(0.3, {**OK, "reloads": [reload_("http", 3, "done", 2, 0.3)]}))
    code, out, _ = ctl(capsys, *at(fake, "reload", "--wait"))
    assert (code, out) == (0, "reload done: http generation 3, 2 worker(s) replaced in 300ms\n")


# --- upgrade --------------------------------------------------------------------------------

UPGRADE = {"pid": 4242, "from": "0.1.0", "to": "0.2.0", "upgrades": 1, "took": 1.234}
UPGRADED = (
    "upgraded in place: master 4242 runs prefork 0.2.0 (was 0.1.0), upgrade 1, "
    "re-executed in 1.2s\n"
)


def test_upgrade_wait_says_what_the_upgrade_and_its_reload_did(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    fake = master({**OK, "upgrade": UPGRADE, "reloads": [reload_("http", 2, "done", 2, 0.8)]})
    assert ctl(capsys, *at(fake, "upgrade", "--wait")) == (
        0,
        UPGRADED + "reload done: http generation 2, 2 worker(s) replaced in 800ms\n",
        "",
    )
    assert fake.requests == [{"v": 1, "cmd": "upgrade", "wait": True}]


def test_upgrade_without_wait_returns_once_the_master_re_executed(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    fake = master({**OK, "upgrade": UPGRADE})
    said = "every worker is being replaced (prefork ctl status shows how it goes)\n"
    assert ctl(capsys, *at(fake, "upgrade")) == (0, UPGRADED + said, "")
    assert fake.requests == [{"v": 1, "cmd": "upgrade", "wait": False}]


def test_an_upgrade_refused_changes_nothing_and_exits_1(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    error = "the installed prefork cannot start this master: cannot import app 'app:app'"
    fake = master({"v": 1, "ok": False, "error": error})
    assert ctl(capsys, *at(fake, "upgrade", "--wait")) == (1, "", f"prefork: error: {error}\n")


def test_an_upgrade_whose_reload_rolled_back_says_both(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    error = "the reload of http was rolled back: worker 3 could not start"
    reloads = [reload_("http", 2, "failed", 0, 2.0)]
    fake = master({"v": 1, "ok": False, "error": error, "upgrade": UPGRADE, "reloads": reloads})
    assert ctl(capsys, *at(fake, "upgrade", "--wait")) == (
        1,
        UPGRADED,
        f"prefork: error: {error}\n",
    )


def test_an_upgrade_waits_for_its_check_longer_than_an_answer_may_take(
    capsys: pytest.CaptureFixture[str],
    master: Callable[..., FakeMaster],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_ctl, "ANSWER_TIMEOUT", 0.05)
    fake = master(Delay(0.3, {**OK, "upgrade": UPGRADE}))
    code, out, _ = ctl(capsys, *at(fake, "upgrade"))
    assert (code, out.splitlines()[0] + "\n") == (0, UPGRADED)


def test_a_master_that_does_not_answer_in_time(
    capsys: pytest.CaptureFixture[str],
    master: Callable[..., FakeMaster],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_ctl, "ANSWER_TIMEOUT", 0.05)
    fake = master(Delay(1.0, OK))
    assert ctl(capsys, *at(fake, "status")) == (
        2,
        "",
        f"prefork: error: the master at {fake.path} did not answer within 0.05s; "
        "it may be stuck: see its log\n",
    )


@pytest.mark.parametrize(
    ("n", "shown"),
    [
        ("-1", "'-1'"),
        ("1.5", "'1.5'"),
        ("x", "'x'"),
        ("³", "'³'"),
        ("", "''"),
        ("1025", "'1025'"),
        ("9" * 5000, repr("9" * 17 + "...")),
        ("0" * 5000 + "1025", repr("0" * 17 + "...")),
    ],
)
def test_scale_needs_a_whole_number_before_connecting(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster], n: str, shown: str
) -> None:
    fake = master(OK)
    with pytest.raises(SystemExit) as caught:
        cli.main(["ctl", *at(fake, "scale", "http", n)])
    assert caught.value.code == 2
    assert capsys.readouterr().err == (
        f"prefork: error: argument N: must be a whole number from 0 to 1024, got {shown}; "
        "see 'prefork ctl scale --help'\n"
    )
    assert fake.lines == []


# --- usage --------------------------------------------------------------------------------


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as caught:
        cli.main(["ctl", *argv])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(capsys) == (
        "prefork: error: the following arguments are required: ACTION; see 'prefork ctl --help'\n"
    )
    assert usage_error(capsys, "status", "--jsn") == (
        "prefork: error: unknown flag --jsn (did you mean --json?); "
        "see 'prefork ctl status --help'\n"
    )
    assert usage_error(capsys, "--bogus", "status") == (
        "prefork: error: unknown flag --bogus; see 'prefork ctl --help'\n"
    )
    assert usage_error(capsys, "scale", "http") == (
        "prefork: error: the following arguments are required: N; see 'prefork ctl scale --help'\n"
    )
    assert usage_error(capsys, "restart") == (
        "prefork: error: argument ACTION: invalid choice: 'restart' (choose from 'status', "
        "'reload', 'drain', 'resume', 'scale', 'stop', 'upgrade'); see 'prefork ctl --help'\n"
    )
    assert usage_error(capsys, "--cont", "x", "stop") == (
        "prefork: error: unknown flag --cont (did you mean --control?); see 'prefork ctl --help'\n"
    )


def test_control_and_pid_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(capsys, "--control", "a", "--pid", "b", "stop") == (
        "prefork: error: argument --pid: not allowed with argument --control; "
        "see 'prefork ctl --help'\n"
    )
    assert ctl(capsys, "--control", "a", "stop", "--pid", "b") == (
        2,
        "",
        "prefork: error: give --control PATH or --pid FILE, not both; see 'prefork ctl --help'\n",
    )


def test_help_names_every_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["ctl", "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for action in ("status", "reload", "drain", "resume", "scale", "stop", "upgrade"):
        assert f"    {action} " in out
    assert "Exit codes: 0 done" in out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "ctl " in capsys.readouterr().out


# --- finding the master -------------------------------------------------------------------


def test_a_missing_socket(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "y.ctl"
    assert ctl(capsys, "--control", str(path), "status") == (
        2,
        "",
        f"prefork: error: no control socket at {path}: is the master running? "
        f"(it listens there with --control {path})\n",
    )


def test_a_missing_socket_beside_the_pid_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pidfile = tmp_path / "web.pid"
    assert ctl(capsys, "--pid", str(pidfile), "status")[2] == (
        f"prefork: error: no control socket at {tmp_path / 'web.ctl'}: is the master running? "
        f"(it listens there with --pid {pidfile})\n"
    )


def test_the_socket_beside_the_pid_file(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster], tmp_path: Path
) -> None:
    fake = master(OK, path=tmp_path / "web.ctl")
    assert ctl(capsys, "--pid", str(tmp_path / "web.pid"), "stop")[0] == 0
    assert fake.requests == [{"v": 1, "cmd": "stop"}]


def test_a_stale_socket(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "y.ctl"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # its master is gone; the file stays
    assert ctl(capsys, "--control", str(path), "status") == (
        2,
        "",
        f"prefork: error: nothing listens on {path}: the master that made it is gone "
        "(a stale socket); remove it, or start the master again\n",
    )


@pytest.mark.parametrize(("make", "kind"), [("file", "a file"), ("dir", "a directory")])
def test_not_a_socket(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make: str, kind: str
) -> None:
    path = tmp_path / "y.ctl"
    if make == "file":
        path.write_text("4242\n")
    else:
        path.mkdir()
    assert ctl(capsys, "--control", str(path), "status") == (
        2,
        "",
        f"prefork: error: {path} is not a socket but {kind}; name the master's control socket "
        "with --control PATH\n",
    )


def refusing_socket(monkeypatch: pytest.MonkeyPatch, error: OSError) -> None:
    """``connect`` fails with ``error`` (what a real socket cannot be made to do as root)."""

    class Refusing:
        def __init__(self, *args: Any) -> None:
            pass

        def settimeout(self, timeout: float | None) -> None:
            pass

        def connect(self, path: str) -> None:
            raise error

        def close(self) -> None:
            pass

    monkeypatch.setattr(
        _ctl, "socket", types.SimpleNamespace(socket=Refusing, AF_UNIX=1, SOCK_STREAM=1)
    )


def test_permission_denied(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing_socket(monkeypatch, PermissionError(errno.EACCES, "Permission denied"))
    assert ctl(capsys, "--control", "/x/y.ctl", "status") == (
        2,
        "",
        "prefork: error: permission denied on /x/y.ctl: the master runs as another user; "
        "run prefork ctl as that user (or as root)\n",
    )


def test_refused_and_gone_in_between(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    refusing_socket(monkeypatch, ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    path = tmp_path / "y.ctl"
    assert ctl(capsys, "--control", str(path), "status")[2].startswith(
        f"prefork: error: no control socket at {path}: is the master running?"
    )


def test_a_path_too_long_for_a_unix_socket(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = str(tmp_path / ("x" * 120))
    assert ctl(capsys, "--control", path, "status") == (
        2,
        "",
        f"prefork: error: cannot connect to {path}: AF_UNIX path too long\n",
    )


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    directory = tmp_path / "prefork"
    directory.mkdir(mode=0o700)
    return directory


def test_the_one_master_in_the_runtime_dir(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster], runtime_dir: Path
) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(runtime_dir / "1.ctl"))
    stale.close()
    fake = master(OK, path=runtime_dir / "4242.ctl")
    assert ctl(capsys, "stop")[0] == 0
    assert fake.requests == [{"v": 1, "cmd": "stop"}]


def test_no_master_in_the_runtime_dir(
    capsys: pytest.CaptureFixture[str], runtime_dir: Path
) -> None:
    assert ctl(capsys, "status") == (
        2,
        "",
        f"prefork: error: no running master found: no live control socket in {runtime_dir}; "
        "start one, or name its socket with --control PATH or --pid FILE\n",
    )


def test_several_masters_in_the_runtime_dir(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster], runtime_dir: Path
) -> None:
    first = master(path=runtime_dir / "10.ctl")
    second = master(path=runtime_dir / "9.ctl")
    assert ctl(capsys, "status") == (
        2,
        "",
        f"prefork: error: several masters are running ({first.path}, {second.path}); "
        "pick one with --control PATH\n",
    )
    assert first.lines == second.lines == []  # only probed


# --- a master that misbehaves ------------------------------------------------------------


def error_of(capsys: pytest.CaptureFixture[str], fake: FakeMaster) -> str:
    code, out, err = ctl(capsys, *at(fake, "status"))
    assert (code, out) == (2, "")
    assert err.startswith("prefork: error: ") and err.count("\n") == 1
    return err.removeprefix("prefork: error: ").rstrip("\n")


def test_the_master_closes_without_answering(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    fake = master(CLOSE)
    assert error_of(capsys, fake) == (
        f"the master at {fake.path} closed the connection before answering "
        "(did it stop? see its log)"
    )


def test_the_master_closes_in_the_middle_of_an_answer(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    fake = master(Partial(b'{"v": 1, "ok": tr'))
    assert "closed the connection before answering" in error_of(capsys, fake)


def test_the_master_is_gone_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.close()
    with _ctl.Connection(mine, "/x/y.ctl") as connection, pytest.raises(_ctl.CtlError) as caught:
        connection.ask({"v": 1, "cmd": "status"})
    assert "closed the connection before answering" in str(caught.value)
    assert caught.value.code == 2


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        (b"garbage\n", "'garbage'"),
        (b"\xff\xfe\n", "'\ufffd\ufffd'"),
        (b"x" * 100 + b"\n", repr("x" * 57 + "...")),
        (b"[" * 5000 + b"]" * 5000 + b"\n", repr("[" * 57 + "...")),  # RecursionError
        (b"9" * 5000 + b"\n", repr("9" * 57 + "...")),  # int()'s digit limit
    ],
)
def test_an_answer_that_is_not_json(
    capsys: pytest.CaptureFixture[str],
    master: Callable[..., FakeMaster],
    answer: bytes,
    shown: str,
) -> None:
    fake = master(answer)
    assert error_of(capsys, fake) == (
        f"the master at {fake.path} answered {shown}, which is not JSON; "
        "is it a prefork control socket?"
    )


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        ([1, 2], "[1, 2]"),
        ({"v": 1}, '{"v": 1}'),
        ({"v": 1, "ok": "yes"}, '{"v": 1, "ok": "yes"}'),
        ({"v": 1, "x": "y" * 80}, '{"v": 1, "x": "' + "y" * 42 + "..."),
    ],
)
def test_an_answer_that_is_not_a_protocol_answer(
    capsys: pytest.CaptureFixture[str],
    master: Callable[..., FakeMaster],
    answer: Any,
    shown: str,
) -> None:
    fake = master(answer)
    assert error_of(capsys, fake) == (
        f"the master at {fake.path} answered {shown}, not a protocol answer (no ok field); "
        "is it a prefork control socket?"
    )


def test_a_master_of_another_protocol_version(
    capsys: pytest.CaptureFixture[str], master: Callable[..., FakeMaster]
) -> None:
    fake = master({"v": 2, "ok": True})
    assert error_of(capsys, fake) == (
        f"the master at {fake.path} speaks protocol version 2 and this prefork ctl speaks 1; "
        "use the prefork ctl of the master's version"
    )


def test_an_answer_too_long(
    capsys: pytest.CaptureFixture[str],
    master: Callable[..., FakeMaster],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_ctl, "MAX_ANSWER", 100)
    fake = master({**OK, "status": {"pid": 1, "padding": "x" * 200}})
    assert error_of(capsys, fake) == f"the master at {fake.path} answered a line over 100 bytes"


def test_ctrl_c_while_waiting(
    capsys: pytest.CaptureFixture[str],
    master: Callable[..., FakeMaster],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(self: _ctl.Connection, request: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(_ctl.Connection, "ask", interrupted)
    fake = master(OK)
    assert ctl(capsys, *at(fake, "reload", "--wait")) == (
        130,
        "",
        "prefork: interrupted; the master carries on\n",
    )


# --- the view, field by field -------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.4, "0s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (192.4, "3m12s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (86399, "23h59m"),
        (86400, "1d00h"),
        (-3, "0s"),
        (None, "-"),
        (True, "-"),
        ("12", "-"),
    ],
)
def test_span(seconds: Any, shown: str) -> None:
    assert span(seconds) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(1.42, "1.4s"), (0.014, "14ms"), (0, "0ms"), (-1, "0ms"), (75, "1m15s"), (None, "-")],
)
def test_took(seconds: Any, shown: str) -> None:
    assert took(seconds) == shown


def test_a_status_with_fields_missing_or_odd_still_prints() -> None:
    status = {
        "metrics": None,
        "brokers": {
            "a": "not an object",
            "b": {
                "workers": [None, {"id": 1, "rss": "big"}],
                "reloading": True,
                "last_reload": {"result": "failed", "generation": 2},
            },
            "c": {"workers": "nope", "last_reload": {"result": "aborted", "duration": 1}},
        },
    }
    assert status_table(status) == (
        "prefork master -  version -  up -  control -  metrics off\n"
        "\n"
        "a  -/- workers  gen -  restarts -  crashes -  no reload yet\n"
        "  (no workers)\n"
        "\n"
        "b  -/- workers  gen -  reloading  restarts -  crashes -  "
        "last reload: gen 2 failed after -, - ago\n"
        "  ID  PID  GEN  STATE  UPTIME  REQUESTS  CONNS  RSS MiB\n"
        "   -    -    -  -           -         -      -        -\n"
        "   1    -    -  -           -         -      -      big\n"
        "\n"
        "c  -/- workers  gen -  restarts -  crashes -  last reload: gen - aborted in 1.0s, - ago\n"
        "  (no workers)\n"
    )
    assert status_table({"brokers": [], "upgrades": 1}) == (
        "prefork master -  version -  up - (upgraded 1x, this image up -)  control -  metrics off\n"
    )


def test_the_table_lists_a_brokers_templates_under_its_header() -> None:
    template = {"generation": 2, "state": "ready", "pid": 4242, "uptime": 75}
    status = {"brokers": {"web": {"workers": [], "templates": [template, "odd"]}}}
    assert status_table(status).splitlines()[2:] == [
        "web  -/- workers  gen -  restarts -  crashes -  no reload yet",
        "  templates: gen 2 ready (pid 4242, up 1m15s), gen - - (pid -, up -)",
        "  (no workers)",
    ]


def test_the_table_shows_a_templates_standby_and_a_brokers_reforks() -> None:
    template = {"generation": 3, "state": "ready", "pid": 42, "uptime": 5, "standby": 50}
    promoted = {**template, "generation": 4, "standby": None, "promoted_from": 7}
    reforks = {"count": 2, "ago": 90, "next_after": 1000}
    web = {"workers": [], "templates": [template, promoted], "reforks": reforks}
    lines = status_table({"brokers": {"web": web}}).splitlines()[3:5]
    assert lines == [
        "  templates: gen 3 ready (pid 42, up 5s, standby 50), "
        "gen 4 ready (pid 42, up 5s, from worker 7)",
        "  reforks: 2, the last 1m30s ago; next after 1000 requests",
    ]
    web["reforks"] = {"count": 0, "ago": None, "next_after": 50}
    assert "  reforks: 0; next after 50 requests" in status_table({"brokers": {"web": web}})
    web["reforks"] = {"count": 3, "ago": 1, "next_after": None}
    assert "  reforks: 3, the last 1s ago; no more" in status_table({"brokers": {"web": web}})
    web["reforks"] = {"count": 0, "ago": None, "next_after": None}  # does not refork: no line
    assert "reforks" not in status_table({"brokers": {"web": web}})

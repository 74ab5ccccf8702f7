"""``--targets FILE``: vegeta's http format parsed line by line (a bad file is one line naming
its line), every URL on the run's host, bounded, and the requests sent in turn."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from test_load_client import HELLO, Answer, FakeTally, Server, run

from prefork.cli import main
from prefork.load import LoadConfig, _targets
from prefork.load._client import run_closed
from prefork.load._targets import Entry, TargetsError, parse, read, target_of

GOOD = """\
# users
GET http://127.0.0.1:8000/users/7
X-Account-Id: 8675309
X-Link: http://elsewhere/a b

  POST http://127.0.0.1:8000/users?notify=1
Content-Type: application/json
@body.json
HEAD http://127.0.0.1:8000/
"""


def test_vegetas_http_format() -> None:
    assert parse(GOOD) == [
        Entry(
            2,
            "GET",
            "http://127.0.0.1:8000/users/7",
            (("X-Account-Id", "8675309"), ("X-Link", "http://elsewhere/a b")),
        ),
        Entry(
            6,
            "POST",
            "http://127.0.0.1:8000/users?notify=1",
            (("Content-Type", "application/json"),),
            "body.json",
        ),
        Entry(9, "HEAD", "http://127.0.0.1:8000/"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "t: no target in it"),
        ("# only a comment\n\n", "t: no target in it"),
        ("X-A: 1\nGET http://h/\n", "t:1: a target starts with METHOD URL, got 'X-A: 1'"),
        ("GET http://h/\njunk\n", "t:2: 'junk' is not a header (Name: value), a body"),
        ("GET http://h/\n: v\n", "t:2: ': v' is not a header"),
        ("GET http://h/\nX-A : v\n", "t:2: 'X-A : v' is not a header"),
        ("GET http://h/\n@a\nX-A: 1\n", "t:3: the body (@FILE) ends a target"),
        ("GET http://h/\n@ \n", "t:2: '@' names no body file"),
        ("get http://h/\n", "t:1: a target starts with METHOD URL"),
        ("GET /relative\n", "t:1: a target starts with METHOD URL"),
    ],
)
def test_a_bad_file_is_one_line_naming_its_line(text: str, message: str) -> None:
    with pytest.raises(TargetsError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse(text, "t")


def test_the_number_of_targets_is_bounded() -> None:
    text = "GET http://h/\n" * _targets.MAX_TARGETS
    assert len(parse(text)) == _targets.MAX_TARGETS
    with pytest.raises(TargetsError, match=f"t:{_targets.MAX_TARGETS + 1}: more than 100,000"):
        parse(text + "GET http://h/\n", "t")


def write(tmp_path: Path, text: str | bytes, name: str = "t.txt") -> str:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return str(path)


def test_every_url_is_on_the_runs_host_and_bodies_are_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "body.json").write_text('{"a": 1}')
    path = write(tmp_path, GOOD + "PUT http://127.0.0.1:8000/u\n@body.json\n")
    entries = read(path, "http://127.0.0.1:8000/")
    assert [body for _, body in entries] == [None, b'{"a": 1}', None, b'{"a": 1}']
    assert entries[1][1] is entries[3][1]  # one file, read once
    https = write(tmp_path, "GET https://Example.com/x\n", "https.txt")
    assert len(read(https, "https://example.com:443/")) == 1


@pytest.mark.parametrize(
    ("text", "url", "message"),
    [
        (
            "GET http://127.0.0.1:8001/\n",
            "http://127.0.0.1:8000/",
            "t.txt:1: 'http://127.0.0.1:8001/' is not on 'http://127.0.0.1:8000/'",
        ),
        ("GET https://h/\n", "http://h/", "is not on 'http://h/', the host the run connects to"),
        ("\nGET http://h:99999/\n", "http://h/", "t.txt:2: 'http://h:99999/': Port out of range"),
        ("GET http://h/\n", "http://h:x/", "cannot load 'http://h:x/'"),
        (
            "GET http://h/\n@missing.bin\n",
            "http://h/",
            "t.txt:1: cannot read the body 'missing.bin'",
        ),
    ],
)
def test_a_target_that_cannot_be_sent_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, url: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TargetsError) as error:
        read(write(tmp_path, text), url)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_file_and_the_bodies_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_targets, "MAX_TARGETS_FILE", 100)
    monkeypatch.setattr(_targets, "MAX_BODIES", 10)
    with pytest.raises(TargetsError, match=r"t.txt: larger than 0 MiB"):
        read(write(tmp_path, "GET http://h/\n" * 10), "http://h/")
    (tmp_path / "a").write_bytes(b"x" * 6)
    (tmp_path / "b").write_bytes(b"y" * 6)
    text = "GET http://h/\n@a\nGET http://h/\n@a\nGET http://h/\n@b\n"
    with pytest.raises(TargetsError, match=r"t.txt:5: the bodies add up to more than 0 MiB"):
        read(write(tmp_path, text), "http://h/")
    with pytest.raises(TargetsError, match=r"cannot read the targets: .*codec"):
        read(write(tmp_path, b"GET http://h/\xff\n"), "http://h/")
    with pytest.raises(TargetsError, match=r"nothing.txt: cannot read the targets"):
        read(str(tmp_path / "nothing.txt"), "http://h/")


def test_the_requests_are_built_with_the_runs_headers(tmp_path: Path) -> None:
    text = "GET http://h/a\nX-A: 1\n\nHEAD http://h/b?q\n"
    config = LoadConfig(url="http://h/", targets=write(tmp_path, text), headers=("X-A: 0",))
    rotation = target_of(config).rotation
    assert rotation == (
        (b"GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n", False),
        (b"HEAD /b?q HTTP/1.1\r\nHost: h\r\nX-A: 0\r\n\r\n", True),
    )
    assert target_of(LoadConfig(url="http://h/")).rotation == ()
    bad = LoadConfig(url="http://h/", targets=write(tmp_path, "GET http://h/\nX\x01: 1\n"))
    with pytest.raises(TargetsError, match=r"t.txt:1: header 'X\\x01': '1' is not a valid field"):
        target_of(bad)


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["-m", "POST"], "give --targets or -m, not both: the targets file says each request"),
        (["--data", "x", "--scenario", "a:b"], "give --targets or --data, --scenario, not both"),
        (["--data-file", "x"], "give --targets or --data-file, not both"),
    ],
)
def test_what_the_file_says_is_not_given_twice(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, "GET http://127.0.0.1:1/\n")
    assert main(["load", "http://127.0.0.1:1/", "--targets", path, *argv]) == 2
    assert capsys.readouterr().err.startswith(f"prefork: error: {line}")


def test_a_bad_targets_file_is_refused_before_forking(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, "GET http://127.0.0.1:1/\nnonsense\n")
    assert main(["load", "http://127.0.0.1:1/", "--targets", path]) == 2
    (said,) = capsys.readouterr().err.splitlines()
    assert said.startswith(f"prefork: error: {path}:2: 'nonsense' is not a header")


def test_the_targets_are_sent_in_turn(tmp_path: Path) -> None:
    async def main(target: Any) -> tuple[Server, FakeTally]:
        def reply(n: int, request: bytes) -> Answer:
            if request.startswith(b"HEAD"):  # a head's answer has no body
                return Answer(HELLO[: -len(b"hello")])
            return Answer(HELLO)

        server = await Server(reply).start()
        tally = FakeTally()
        await run_closed(target(server), 2, time.monotonic() + 0.3, tally, timeout=1.0)
        await server.stop()
        return server, tally

    def target(server: Server) -> Any:
        text = f"GET {server.url('/a')}\n\nHEAD {server.url('/b')}\n\nGET {server.url('/c')}\n"
        return target_of(LoadConfig(url=server.url(), targets=write(tmp_path, text)))

    server, tally = run(lambda: main(target))
    paths = [request.split(b" ")[1] for request in server.requests]
    assert len(paths) > 30 and tally.errors == []
    assert paths[:3] == [b"/a", b"/b", b"/c"] or sorted(paths[:3]) == [b"/a", b"/b", b"/c"]
    for path in (b"/a", b"/b", b"/c"):  # in turn over the worker's connections
        assert abs(paths.count(path) - len(paths) / 3) <= 1

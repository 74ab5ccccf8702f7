"""gunicorn's request corpus through a real ``prefork serve --interface wsgi``: for each valid
request file, the environ our WSGI app gets holds what gunicorn's own expectations say
(``tests/unit/corpus/gunicorn/requests.json``): method, path, query, protocol, every header
and the body read from ``wsgi.input``. The files our parser refuses on purpose
(``test_http_corpus``'s tables, with their reasons) stay refused, and every invalid file is
refused but for those tabled as accepted there.

The app (``wsgi_apps/plain_app.py:environ_echo``) answers JSON; the expected environ is
built from gunicorn's header list by gunicorn's own rules (``gunicorn/http/wsgi.py``):
Content-Type and Content-Length as ``CONTENT_TYPE`` / ``CONTENT_LENGTH``, every other field
as ``HTTP_`` + its name upper-cased with ``-`` made ``_``, repeated fields joined with ``,``,
``PATH_INFO`` percent-decoded to latin-1.

Files are sent in batches, one server per set of size limits: a few server starts in all.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import MasterProcess, listener, wait_until
from http_wire import Reader, exchange

# The corpus and its tables of deliberate differences live with the unit test that feeds
# the same files to the parser alone; one copy of each reason.
sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
import test_http_corpus as corpus

pytestmark = pytest.mark.timeout(60)

WSGI_APPS = Path(__file__).parent / "wsgi_apps"
REQUESTS: dict[str, list[dict[str, Any]]] = json.loads(
    (corpus.CORPUS / "requests.json").read_text(encoding="utf-8")
)
CGI_HEADERS = {"CONTENT-TYPE": "CONTENT_TYPE", "CONTENT-LENGTH": "CONTENT_LENGTH"}

#: Valid files whose environ differs from gunicorn's, and why (beyond test_http_corpus's
#: VALID_SERVED_OTHERWISE, whose methods it shares).
ENVIRON_OTHERWISE: dict[str, str] = {
    "040_compat.http": (
        "gunicorn's header_map=dangerous puts 'Transfer_Encoding' and 'Content_Length' in the "
        "environ as HTTP_TRANSFER_ENCODING and HTTP_CONTENT_LENGTH; prefork always drops a "
        "field with '_' in its name from the environ (gunicorn's default, header_map=drop: "
        "040.http), so no header can pass for another there"
    ),
}


def expected_environ(request: dict[str, Any], host: bool) -> dict[str, Any]:
    """What ``environ_echo`` answers for one of gunicorn's requests (with a Host line added,
    ``host``, to an HTTP/1.1 request: ``with_host`` adds none to 1.0), by gunicorn's rules."""
    headers: dict[str, str] = {}
    added = [["HOST", "t"]] if host and request["version"] == [1, 1] else []
    for name, value in request["headers"] + added:
        if "_" in name:  # ENVIRON_OTHERWISE
            continue
        key = CGI_HEADERS.get(name) or "HTTP_" + name.replace("-", "_")
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    major, minor = request["version"]
    return {
        "REQUEST_METHOD": request["method"],
        "PATH_INFO": urllib.parse.unquote_to_bytes(request["path"].encode("latin-1")).decode(
            "latin-1"
        ),
        "QUERY_STRING": request["query"],
        "SERVER_PROTOCOL": f"HTTP/{major}.{minor}",
        "headers": headers,
        "body": request["body"],
    }


# -- the servers: one per set of limits ------------------------------------------------------


Limits = tuple[tuple[str, int], ...]


def limits_key(limits: dict[str, int]) -> Limits:
    return tuple(sorted(limits.items()))


#: Every set of limits some file is served with.
ALL_LIMITS = sorted(
    {limits_key(corpus.request_of(kind, name, False)[1]) for kind, names in
     (("valid", corpus.VALID), ("invalid", corpus.INVALID)) for name in names}
)  # fmt: skip


class Servers:
    """``prefork serve --interface wsgi`` of ``environ_echo``, one per set of limits, all
    started together (a few seconds in all, not a few each), stopped at the module's end."""

    def __init__(self, base: Path) -> None:
        self.started: dict[Limits, tuple[MasterProcess, int]] = {}
        for i, key in enumerate(ALL_LIMITS):
            sock = listener()
            port = sock.getsockname()[1]
            argv = [sys.executable, "-m", "prefork", "serve", "--interface", "wsgi"]
            argv += ["--threads", "4", "--workers", "1", "--bind", f"fd://{sock.fileno()}"]
            argv += [f"--{k.replace('_', '-')}={v}" for k, v in key]
            argv += ["--app-dir", str(WSGI_APPS), "plain_app:environ_echo"]
            workdir = base / f"server{i}"
            workdir.mkdir()
            self.started[key] = (MasterProcess(argv, workdir, pass_fds=[sock]), port)

    def port(self, limits: dict[str, int]) -> int:
        return self.started[limits_key(limits)][1]

    def wait_answering(self) -> None:
        probe = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
        for master, port in self.started.values():

            def answers(master: MasterProcess = master, port: int = port) -> bool:
                master.check_running("the app to answer")
                try:
                    return exchange(port, probe, timeout=2).status == 200
                except OSError:
                    return False

            wait_until(answers, 30, "the environ app answers")

    def stop(self) -> None:
        for master, _ in self.started.values():
            master.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    started = Servers(tmp_path_factory.mktemp("wsgi-corpus"))
    try:
        started.wait_answering()
        yield started
    finally:
        started.stop()


def send(port: int, data: bytes, answers: int) -> tuple[list[tuple[int, bytes]], bool]:
    """Send ``data`` on a new connection; read ``answers`` responses, then end our side and
    read to the close. The (status, body) of every response, and whether any bytes came
    after the last of them."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reader = Reader(sock)
        got = []
        try:
            for _ in range(answers):
                response = reader.response()
                got.append((response.status, response.body))
        except ConnectionError:
            return got, False
        sock.shutdown(socket.SHUT_WR)
        while reader._more():
            pass
        return got, bool(reader.buf)


def send_all(port: int, data: bytes) -> list[tuple[int, bytes]]:
    """Send ``data`` and our EOF at once (an incomplete request is never answered before
    it), then read to the close: the (status, body) of every response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reader, got = Reader(sock), []
        with contextlib.suppress(ConnectionError):
            while True:
                response = reader.response()
                got.append((response.status, response.body))
        return got


# -- the tests -------------------------------------------------------------------------------


def test_every_valid_file_has_its_requests() -> None:
    assert sorted(REQUESTS) == corpus.VALID
    for name, requests in REQUESTS.items():
        counts = [[r["method"], len(r["headers"])] for r in requests]
        assert counts == [[m, n] for m, _, n in corpus.EXPECTED["valid"][name]["requests"]]
    underscored = {
        name
        for name, requests in REQUESTS.items()
        if any("_" in field for r in requests for field, _ in r["headers"])
    }
    assert underscored == set(ENVIRON_OTHERWISE)


@pytest.mark.parametrize("name", corpus.VALID)
def test_a_valid_request_reaches_the_environ_as_gunicorn_parses_it(
    servers: Servers, name: str
) -> None:
    raw, limits = corpus.request_of("valid", name, False)
    port = servers.port(limits)
    requests, host = REQUESTS[name], False
    if name in corpus.VALID_REFUSED:
        statuses, why = corpus.VALID_REFUSED[name]
        answers, _ = send(port, raw, len(statuses))
        assert tuple(status for status, _ in answers) == statuses, why
        if why != corpus.NO_HOST:
            return
        raw, host = corpus.with_host(raw), True  # refused for lacking Host only: and the rest?
    if name in corpus.VALID_SERVED_OTHERWISE:  # the methods as we serve them
        served, _ = corpus.VALID_SERVED_OTHERWISE[name]
        requests = [{**requests[i], "method": m} for i, (m, _, _) in enumerate(served)]
    answers, more = send(port, raw, len(requests))
    seen = [(status, json.loads(body)) for status, body in answers]
    wanted = [(200, expected_environ(r, host)) for r in requests]
    assert seen == wanted, ENVIRON_OTHERWISE.get(name, "")
    assert not more, "bytes after the last answer"


@pytest.mark.parametrize("name", corpus.INVALID)
def test_an_invalid_request_is_refused_or_tabled(servers: Servers, name: str) -> None:
    raw, limits = corpus.request_of("invalid", name, False)
    if corpus.lacks_host(raw):
        raw = corpus.with_host(raw)  # refused for what it was written for?
    answers = send_all(servers.port(limits), raw)
    if name in corpus.INVALID_ACCEPTED:
        assert [status for status, _ in answers] == [200], corpus.INVALID_ACCEPTED[name]
    else:
        assert not answers or answers[0][0] >= 400, f"{name} accepted"

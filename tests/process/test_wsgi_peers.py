"""The peers' corpus (issue 22): a Flask app and a Django project answer under
``prefork serve --interface wsgi`` as under gunicorn's gthread worker, byte for byte.

Each app is served by ``prefork serve --interface wsgi --threads 4 --workers 1`` and by
``gunicorn -k gthread --threads 4 -w 1``, both on a socket bound here (``fd://N``), and each
request below is sent as raw bytes on a new connection to both (JSON, a form, a multipart
upload, a streamed response, a redirect, an error, HEAD, 404, a 70,000-byte echo, a chunked
upload, escapes in the query and the path, cookies, HTTP/1.0, Expect: 100-continue, pipelined
requests). The answers must be equal after dropping only what cannot be equal:

- ``Date`` (the clock) and ``Server`` (the name) headers, and our port inside ``Location``;
- the two differences in ``ALLOWED``, where prefork is right to differ.

Header names are compared as sent (the app's case: "Content-Type") and the status line with
the app's own reason phrase (Flask's "404 NOT FOUND"), as gunicorn sends both.

Header order: the app's own headers keep the order the app gave them (meaningful for repeated
fields such as ``Set-Cookie``), so that list is compared in order. Where a server puts the
fields it adds itself (``Connection``, ``Transfer-Encoding``) among them is not meaningful
(RFC 9110 section 5.3: only the order of same-named fields is), so those are compared as a
set. Bodies are compared as framed on the wire: chunk sizes included.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import MasterProcess, listener, wait_until
from http_wire import Response, conversation, exchange

pytestmark = pytest.mark.timeout(60)

WSGI_APPS = Path(__file__).parent / "wsgi_apps"
HOST = b"Host: example.test\r\n"
APPS = {"flask": "flask_app:app", "django": "djangoproj.wsgi:application"}

# -- the requests ----------------------------------------------------------------------------

BOUNDARY = b"----prefork-boundary-7MA4YWxkTrZu0gW"
MULTIPART = b"".join(
    [
        b"--" + BOUNDARY + b"\r\n",
        b'Content-Disposition: form-data; name="title"\r\n\r\n',
        b"caf\xc3\xa9 notes\r\n",
        b"--" + BOUNDARY + b"\r\n",
        b'Content-Disposition: form-data; name="doc"; filename="a.txt"\r\n',
        b"Content-Type: text/plain\r\n\r\n",
        b"first file\nwith two lines\n\r\n",
        b"--" + BOUNDARY + b"\r\n",
        b'Content-Disposition: form-data; name="blob"; filename="b.bin"\r\n',
        b"Content-Type: application/octet-stream\r\n\r\n",
        bytes(range(256)) * 40 + b"\r\n",
        b"--" + BOUNDARY + b"--\r\n",
    ]
)
LARGE = bytes(i * 7 % 251 for i in range(70_000))
CHUNKS = [b"first chunk,", b"x" * 5000, b"last"]


def get(target: bytes, *headers: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\n" + HOST + b"".join(headers) + b"\r\n"


def post(target: bytes, body: bytes, content_type: bytes) -> bytes:
    head = b"POST " + target + b" HTTP/1.1\r\n" + HOST + b"Content-Type: " + content_type
    return head + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def chunked(target: bytes, chunks: list[bytes]) -> bytes:
    head = b"POST " + target + b" HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n"
    head += b"Content-Type: application/octet-stream\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


FORM = b"a=1&a=2&b=caf%C3%A9+x&c="
REQUEST_HEAD = b"HEAD /json HTTP/1.1\r\n" + HOST + b"\r\n"
ECHO = post(b"/echo", LARGE[:1000], b"application/octet-stream")
EXPECT = post(b"/echo", LARGE[:3000], b"application/octet-stream").replace(
    HOST, HOST + b"Expect: 100-continue\r\n"
)
#: name -> what the client sends after the first interim (1xx) response
STAGED = {"expect-continue": EXPECT.partition(b"\r\n\r\n")[2]}

#: name -> (the method of each request, the raw requests: several are pipelined)
REQUESTS: dict[str, tuple[str, bytes]] = {
    "json": ("GET", get(b"/json")),
    "form": (
        "POST",
        post(b"/form", b"a=1&a=2&b=caf%C3%A9+x&c=", b"application/x-www-form-urlencoded"),
    ),
    "upload": ("POST", post(b"/upload", MULTIPART, b"multipart/form-data; boundary=" + BOUNDARY)),
    "stream": ("GET", get(b"/stream")),
    "redirect": ("GET", get(b"/redirect")),
    "error": ("GET", get(b"/boom")),
    "head": ("HEAD", REQUEST_HEAD),
    "not-found": ("GET", get(b"/missing")),
    "large-echo": ("POST", post(b"/echo", LARGE, b"application/octet-stream")),
    "chunked-upload": ("POST", chunked(b"/echo", CHUNKS)),
    "query": ("GET", get(b"/query?x=%20a%2Fb&y=%C3%A9&z=1+2&z=3&empty=&flag")),
    "non-ascii-path": ("GET", get(b"/caf%C3%A9/%E6%97%A5%E6%9C%AC")),
    "cookie": ("GET", get(b"/cookie", b'Cookie: a=1; b="two words"; c=%20x\r\n')),
    "set-cookies": ("GET", get(b"/set-cookies")),
    "http10": ("GET", b"GET /json HTTP/1.0\r\n\r\n"),
    # The head alone; the body only once "100 Continue" came (``STAGED``).
    "expect-continue": ("POST", EXPECT.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"),
    "pipelined": ("GET GET HEAD POST", get(b"/json") + get(b"/set-cookies") + REQUEST_HEAD + ECHO),
}

# -- comparing answers -----------------------------------------------------------------------

DROPPED = {b"date", b"server"}
SERVER_ADDED = {b"connection", b"transfer-encoding"}

#: Where prefork rightly answers otherwise than gunicorn: each is normalised away in
#: ``answer`` for both servers. Keep this short.
ALLOWED = {
    "keep-alive": (
        "gunicorn sends 'Connection: keep-alive' on HTTP/1.1 answers; prefork adds nothing: "
        "persistence is HTTP/1.1's default (RFC 9112 section 9.3). 'close' is compared"
    ),
    "version": (
        "an HTTP/1.0 request is answered 'HTTP/1.1 ...' by prefork (h11), 'HTTP/1.0 ...' by "
        "gunicorn: a server sends the highest minor version it conforms to (RFC 9110 "
        "section 2.5); the framing (Connection: close, Content-Length) is compared"
    ),
}


@dataclass(frozen=True)
class Answer:
    """A response with what cannot be equal dropped."""

    status_line: bytes
    app_headers: tuple[tuple[bytes, bytes], ...]  # in order
    server_headers: frozenset[tuple[bytes, bytes]]
    body: bytes


def answer(response: Response, port: int, http10: bool = False) -> Answer:
    """``response`` with Date and Server dropped, our port in Location made a placeholder, and
    the ALLOWED differences normalised away (``http10``: the answer to an HTTP/1.0
    request)."""
    app_headers, server_headers = [], set()
    for name, value in response.headers:
        key = name.lower()
        if key in DROPPED:
            continue
        if key == b"location":
            value = value.replace(b"127.0.0.1:%d" % port, b"127.0.0.1:PORT")
        if key in SERVER_ADDED:
            if (key, value.lower()) != (b"connection", b"keep-alive"):  # ALLOWED keep-alive
                server_headers.add((key, value.lower()))
        else:
            app_headers.append((name, value))  # as sent: the app's case
    version, rest = response.status_line.split(b" ", 1)
    status_line = (b"HTTP/1.x" if http10 else version) + b" " + rest  # ALLOWED version
    return Answer(status_line, tuple(app_headers), frozenset(server_headers), response.body)


# -- the servers -----------------------------------------------------------------------------


@dataclass
class Served:
    master: MasterProcess
    port: int

    def raw(self, name: str) -> list[Response]:
        methods, requests = REQUESTS[name]
        return conversation(self.port, requests, methods.split(), STAGED.get(name, b""))

    def ask(self, name: str) -> list[Answer]:
        return [answer(r, self.port, name == "http10") for r in self.raw(name)]


def start(argv: list[str], workdir: Path) -> Served:
    sock = listener()
    port = sock.getsockname()[1]
    argv = [a.replace("{fd}", str(sock.fileno())) for a in argv]
    env = {"DJANGO_SETTINGS_MODULE": "djangoproj.settings"}
    workdir.mkdir(parents=True, exist_ok=True)
    master = MasterProcess(argv, workdir, pass_fds=[sock], env=env)
    return Served(master, port)


def wait_answering(served: Served) -> None:
    """Until the app answers (the socket is bound and listening already: a request waits in
    its queue while the worker imports the app)."""

    def answers() -> bool:
        served.master.check_running("the app to answer")
        try:
            return exchange(served.port, get(b"/json"), timeout=2).status == 200
        except OSError:
            return False

    wait_until(answers, 30, "the app answers /json")


def prefork_argv(app: str) -> list[str]:
    return [
        sys.executable, "-m", "prefork", "serve", "--interface", "wsgi", "--threads", "4",
        "--workers", "1", "--bind", "fd://{fd}", "--app-dir", str(WSGI_APPS), app,
    ]  # fmt: skip


def gunicorn_argv(app: str) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "4", "-w", "1",
        "--bind", "fd://{fd}", "--pythonpath", str(WSGI_APPS), app,
    ]  # fmt: skip


@pytest.fixture(scope="module", params=sorted(APPS))
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Served, Served]]:
    """One app served by prefork and by gunicorn, for the whole module."""
    name = request.param
    base = tmp_path_factory.mktemp(f"peers-{name}")
    ours = start(prefork_argv(APPS[name]), base / "prefork")
    theirs = start(gunicorn_argv(APPS[name]), base / "gunicorn")
    try:
        wait_answering(ours)
        wait_answering(theirs)
        yield name, ours, theirs
    finally:
        ours.master.stop()
        theirs.master.stop()


@pytest.mark.parametrize("request_name", list(REQUESTS))
def test_an_app_answers_as_under_gunicorn_gthread(
    pair: tuple[str, Served, Served], request_name: str
) -> None:
    _, ours, theirs = pair
    assert ours.ask(request_name) == theirs.ask(request_name)


def test_http10_is_answered_with_close_by_both(pair: tuple[str, Served, Served]) -> None:
    """ALLOWED "version" drops no framing: both close after answering HTTP/1.0."""
    _, ours, theirs = pair
    for served in (ours, theirs):
        (response,) = served.raw("http10")
        assert response.header(b"connection") == b"close"


def app_header_names(responses: list[Response]) -> list[list[bytes]]:
    """The names of the app's own headers (not Date, Server or the framing's), as sent."""
    skipped = DROPPED | SERVER_ADDED
    return [[n for n, _ in r.headers if n.lower() not in skipped] for r in responses]


def test_header_names_go_out_as_the_app_gave_them(pair: tuple[str, Served, Served]) -> None:
    _, ours, theirs = pair
    assert app_header_names(ours.raw("json")) == app_header_names(theirs.raw("json"))


def test_the_status_line_is_the_apps(pair: tuple[str, Served, Served]) -> None:
    app, ours, theirs = pair
    if app == "flask":  # Django's reason phrases are the standard ones
        assert ours.raw("not-found")[0].status_line == b"HTTP/1.1 404 NOT FOUND"
    assert [r.status_line for r in ours.raw("not-found")] == [
        r.status_line for r in theirs.raw("not-found")
    ]

"""``--targets FILE``: the requests of a run from a file, in vegeta's http format, sent in turn.

vegeta's format was chosen over JSON lines because it is documented (vegeta's README,
"http format"), written by hand without escaping, and vegeta's users' files work unchanged::

    # a comment
    GET http://127.0.0.1:8000/users/7
    X-Account-Id: 8675309

    POST http://127.0.0.1:8000/users
    Content-Type: application/json
    @body.json

A target is a ``METHOD URL`` line, then its ``Name: value`` header lines, then at most one
``@FILE`` line naming its body (relative to the working directory, as vegeta reads it). Blank
lines and ``#`` comments are skipped. Every URL must be on the host (scheme, host and port)
the run connects to. Bounded: ``MAX_TARGETS_FILE`` bytes of file, ``MAX_TARGETS`` targets,
``MAX_BODIES`` bytes of bodies in all (each file read once). A bad file raises
``TargetsError``: one line naming the file and the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from prefork.load._config import LoadConfig
from prefork.load._target import Target

#: The largest targets file read.
MAX_TARGETS_FILE = 16 << 20
#: The most targets in one file.
MAX_TARGETS = 100_000
#: The bodies of all targets together (a body file named twice is read, and counted, once).
MAX_BODIES = 64 << 20


#: A target's first line: an upper-case method, one space, an absolute URL.
_REQUEST_LINE = re.compile(r"([A-Z]+) +([A-Za-z][A-Za-z0-9+.-]*://\S*)")


class TargetsError(ValueError):
    """A targets file that cannot be used: its message names the file and the line."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One target of the file: the line it starts on, method, URL, headers, body file."""

    line: int
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None


def parse(text: str, name: str = "targets") -> list[Entry]:
    """The targets of ``text`` (vegeta's http format). Raises ``TargetsError`` naming ``name``
    and the line of the first thing wrong."""
    entries: list[Entry] = []
    method = url = body = None
    headers: list[tuple[str, str]] = []
    start = 0

    def close() -> None:
        if method is not None and url is not None:
            entries.append(Entry(start, method, url, tuple(headers), body))

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        request_line = _REQUEST_LINE.fullmatch(line)
        if request_line is not None:  # a new target
            close()
            if len(entries) >= MAX_TARGETS:
                raise TargetsError(f"{name}:{number}: more than {MAX_TARGETS:,} targets")
            method, url = request_line.groups()
            body, headers, start = None, [], number
        elif method is None:
            raise TargetsError(
                f"{name}:{number}: a target starts with METHOD URL, got {line!r:.80}"
            )
        elif body is not None:
            raise TargetsError(
                f"{name}:{number}: the body (@FILE) ends a target; start the next with METHOD URL"
            )
        elif line.startswith("@"):
            body = line[1:].strip()
            if not body:
                raise TargetsError(f"{name}:{number}: '@' names no body file")
        else:
            field, colon, value = line.partition(":")
            if not colon or not field.strip() or field != field.strip():
                raise TargetsError(
                    f"{name}:{number}: {line!r:.80} is not a header (Name: value), a body "
                    "(@FILE) or a new target (METHOD URL)"
                )
            headers.append((field, value.strip()))
    close()
    if not entries:
        raise TargetsError(f"{name}: no target in it (METHOD URL lines)")
    return entries


def origin(url: str) -> tuple[str, str | None, int | None]:
    """The scheme, host and port a URL connects to (the port the scheme's when not given).
    Raises ``ValueError`` on a URL without them."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, parts.hostname, port


def path_of(url: str) -> str:
    """The request target of a URL: its path (``/`` when empty) and query."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def read(path: str, url: str) -> list[tuple[Entry, bytes | None]]:
    """The targets of the file at ``path`` with their bodies, each on the host of ``url``.
    Raises ``TargetsError`` (one line, naming the file and the line)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_TARGETS_FILE + 1)
        if len(data) > MAX_TARGETS_FILE:
            raise TargetsError(f"{path}: larger than {MAX_TARGETS_FILE >> 20} MiB")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetsError(f"{path}: cannot read the targets: {exc}") from None
    try:
        home = origin(url)
    except ValueError as exc:
        raise TargetsError(f"cannot load {url!r}: {exc}") from None
    bodies: dict[str, bytes] = {}
    out = []
    for entry in parse(text, path):
        try:
            there = origin(entry.url)
        except ValueError as exc:
            raise TargetsError(f"{path}:{entry.line}: {entry.url!r:.80}: {exc}") from None
        if there != home:
            raise TargetsError(
                f"{path}:{entry.line}: {entry.url!r:.80} is not on {url!r:.80}, the host the run "
                "connects to (one run loads one host)"
            )
        body = None
        if entry.body is not None:
            body = bodies.get(entry.body)
            if body is None:
                used = sum(map(len, bodies.values()))
                body = bodies[entry.body] = _body(path, entry.line, entry.body, used)
        out.append((entry, body))
    return out


def _body(path: str, line: int, name: str, read_so_far: int) -> bytes:
    left = MAX_BODIES - read_so_far
    try:
        with open(name, "rb") as file:
            body = file.read(left + 1)
    except OSError as exc:
        raise TargetsError(f"{path}:{line}: cannot read the body {name!r}: {exc}") from None
    if len(body) > left:
        raise TargetsError(f"{path}:{line}: the bodies add up to more than {MAX_BODIES >> 20} MiB")
    return body


def target_of(config: LoadConfig) -> Target:
    """The run's ``Target``, with ``--targets``' requests in turn. Raises ``ValueError``
    (a ``TargetsError`` for the targets file, naming its line)."""
    target = Target(
        config.url,
        method=config.method,
        headers=config.headers,
        body=config.body(),
        insecure=config.insecure,
    )
    if config.targets is not None:
        rotation = []
        for entry, body in read(config.targets, config.url):
            path = path_of(entry.url)
            try:
                request = target.build(entry.method, path, entry.headers, body)
            except ValueError as exc:
                raise TargetsError(f"{config.targets}:{entry.line}: {exc}") from None
            rotation.append((request, entry.method == "HEAD"))
        target.rotation = tuple(rotation)
    return target

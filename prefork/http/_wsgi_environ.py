"""The WSGI ``environ`` of a request (PEP 3333), filled as gunicorn fills it, from the ASGI
scope the connection already built (so both interfaces see the same client, scheme, proxy
headers and root path). Pure: no I/O.

Decided, as gunicorn does: header fields join repeated names with ``","``; a header whose
name holds ``_`` is dropped (``X_Forwarded_For`` would otherwise pass for
``X-Forwarded-For``: both are ``HTTP_X_FORWARDED_FOR``); ``SERVER_NAME``/``SERVER_PORT`` are
the listening socket's address (a unix socket: its path, and the scheme's default port).
``--root-path`` is ``SCRIPT_NAME``; a path that starts with it (the proxy passed the prefix on)
has it stripped from ``PATH_INFO``, a path that does not (the proxy stripped it) is
``PATH_INFO`` whole.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import unquote_to_bytes

#: What every environ of a worker shares (``wsgi.errors``, ``wsgi.multithread``, ...).
Environ = dict[str, Any]

_DEFAULT_PORTS = {"http": "80", "https": "443"}
#: Header names that are not ``HTTP_*`` in an environ (PEP 3333: CGI's names).
_CGI_NAMES = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
#: ``HTTP_*`` keys by header name: the same few names come with every request.
_KEYS: dict[bytes, str] = {}
_MAX_KEYS = 1024


class FileWrapper:
    """``wsgi.file_wrapper``: a file-like object's content as an iterable of blocks, closed
    with it (PEP 3333's optional platform-specific file handling, served as a plain
    iterable: each block is one response chunk, bounded as any other). No ``sendfile``:
    uvloop's transports do not offer it (MagicStack/uvloop#228)."""

    def __init__(self, filelike: IO[bytes], blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while data := read(self.blksize):
            yield data


def base_environ(*, threads: int) -> Environ:
    """What every environ of a worker with ``threads`` threads starts from."""
    return {
        "SERVER_SOFTWARE": "prefork",
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": threads > 1,
        "wsgi.multiprocess": True,  # even with one worker: a reload runs two side by side
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }


def _key(name: bytes) -> str:
    key = _KEYS.get(name)
    if key is None:
        key = _CGI_NAMES.get(name) or "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[name] = key
    return key


def split_root(target: bytes, root: str) -> tuple[str, str]:
    """``(SCRIPT_NAME, PATH_INFO)`` of a request path (undecoded, without its query):
    ``PATH_INFO`` is percent-decoded to bytes, then to ``str`` as latin-1 (PEP 3333)."""
    path = (
        unquote_to_bytes(target).decode("latin-1") if b"%" in target else target.decode("latin-1")
    )
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return root, path


def build_environ(scope: dict[str, Any], base: Environ, wsgi_input: object) -> Environ:
    """The environ of the request ``scope`` describes (an ASGI ``http`` scope, its
    ``raw_path`` prefixed with its ``root_path`` as ``build_scope`` does), starting from a
    copy of ``base`` (what every request of the worker shares)."""
    root: str = scope["root_path"]
    target: bytes = scope["raw_path"]
    if root:
        target = target[len(root.encode()) :]
    script_name, path_info = split_root(target, root)
    query: bytes = scope["query_string"]
    scheme: str = scope["scheme"]
    environ = base.copy()
    environ["REQUEST_METHOD"] = scope["method"]
    environ["SCRIPT_NAME"] = script_name
    environ["PATH_INFO"] = path_info
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["RAW_URI"] = (target + b"?" + query if query else target).decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/" + scope["http_version"]
    environ["wsgi.url_scheme"] = scheme
    environ["wsgi.input"] = wsgi_input
    server = scope["server"]
    if server is None:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = "localhost", _DEFAULT_PORTS[scheme]
    else:
        environ["SERVER_NAME"] = server[0]
        port = server[1]
        environ["SERVER_PORT"] = _DEFAULT_PORTS[scheme] if port is None else str(port)
    client = scope["client"]
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    for name, value in scope["headers"]:
        if b"_" in name:
            continue
        key = _key(name)
        text = value.decode("latin-1")
        if key in environ and key.startswith("HTTP_"):
            environ[key] += "," + text
        else:
            environ[key] = text
    return environ

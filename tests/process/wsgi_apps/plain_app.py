"""A plain WSGI callable that answers with what its environ holds (for gunicorn's request
corpus), and a hello for the benchmark."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]
CGI_FIELDS = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL")
CGI_HEADERS = ("CONTENT_TYPE", "CONTENT_LENGTH")


def read_body(environ: dict[str, Any]) -> bytes:
    """The body as PEP 3333 lets an app read it: Content-Length bytes, or to the end when the
    server says the input is terminated (chunked)."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return bytes(stream.read(int(length)))
    if not environ.get("wsgi.input_terminated"):
        return b""
    parts = []
    while part := stream.read(65536):
        parts.append(part)
    return b"".join(parts)


def environ_echo(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """JSON: the CGI fields, every HTTP_* and CGI header, and the body (code points 0-255)."""
    seen = {key: environ[key] for key in CGI_FIELDS}
    seen["headers"] = {
        key: value
        for key, value in environ.items()
        if key.startswith("HTTP_") or (key in CGI_HEADERS and value)
    }
    seen["body"] = read_body(environ).decode("latin-1")
    body = json.dumps(seen, sort_keys=True).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]

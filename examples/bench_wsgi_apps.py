"""The WSGI apps benchmarks/wsgi.py measures: the routes of examples/bench_apps.py (the ASGI
benchmark app) as a plain WSGI callable and as a Flask app, so that a WSGI server is measured
on the same work as an ASGI one.

    prefork serve --interface wsgi --threads 4 examples.bench_wsgi_apps:app
    prefork serve --interface wsgi --threads 4 examples.bench_wsgi_apps:flask_app

Routes: ``GET /`` "Hello, world!" (13 bytes of text); ``GET /json`` bench_apps's JSON
document of exactly 1 KiB, serialized on every request; ``POST /echo`` reads the whole body
(Content-Length bytes) and sends it back. Anything else is a 404.

``app_asgi`` and ``flask_app_asgi`` are the same apps wrapped by a2wsgi's WSGIMiddleware (what
uvicorn recommends for WSGI apps), with BENCH_WSGI_THREADS threads (default 4). Flask and a2wsgi
are imported only when their app is asked for. When BENCH_APPS_READY_DIR is set, each process
that imports this module writes an empty file named by its pid there (WSGI has no lifespan):
the benchmark polls for one per worker rather than sleeping.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from examples.bench_apps import DOCUMENT, HELLO

StartResponse = Callable[..., Any]


def _answer(
    start_response: StartResponse, status: str, content_type: str, body: bytes
) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    if path == "/" and method in ("GET", "HEAD"):
        return _answer(start_response, "200 OK", "text/plain; charset=utf-8", HELLO)
    if path == "/json" and method in ("GET", "HEAD"):
        body = json.dumps(DOCUMENT).encode()
        return _answer(start_response, "200 OK", "application/json", body)
    if path == "/echo" and method == "POST":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        return _answer(start_response, "200 OK", "application/octet-stream", body)
    return _answer(start_response, "404 Not Found", "text/plain; charset=utf-8", b"Not Found")


def _flask_app() -> Any:
    from flask import Flask, Response, request

    flask = Flask(__name__)

    @flask.get("/")
    def hello() -> Response:
        return Response(HELLO, mimetype="text/plain")

    @flask.get("/json")
    def document() -> Response:
        return Response(json.dumps(DOCUMENT), mimetype="application/json")

    @flask.post("/echo")
    def echo() -> Response:
        return Response(request.get_data(), mimetype="application/octet-stream")

    return flask


def _asgi(wsgi: Any) -> Any:
    from a2wsgi import WSGIMiddleware

    return WSGIMiddleware(wsgi, workers=int(os.environ.get("BENCH_WSGI_THREADS", "4")))


def __getattr__(name: str) -> Any:
    """``flask_app``, ``app_asgi`` and ``flask_app_asgi``, made on first use."""
    makers: dict[str, Callable[[], Any]] = {
        "flask_app": _flask_app,
        "app_asgi": lambda: _asgi(app),
        "flask_app_asgi": lambda: _asgi(_flask_app()),
    }
    if name not in makers:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    made = makers[name]()
    globals()[name] = made
    return made


if ready := os.environ.get("BENCH_APPS_READY_DIR"):
    Path(ready, str(os.getpid())).touch()

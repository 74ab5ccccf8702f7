"""A Flask app with one route per kind of request the peers' test compares (JSON, forms,
uploads, streaming, redirects, errors, cookies, ...), served by prefork and by gunicorn."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from flask import Flask, Response, redirect, request

app = Flask(__name__)


@app.get("/json")
def json_items() -> dict[str, object]:
    return {"items": list(range(20)), "name": "prefork", "nested": {"ok": True}}


@app.post("/form")
def form() -> dict[str, object]:
    return {"form": {key: request.form.getlist(key) for key in sorted(request.form)}}


@app.post("/upload")
def upload() -> dict[str, object]:
    files = {
        key: [f.filename, f.mimetype, hashlib.sha256(f.read()).hexdigest()]
        for key, f in sorted(request.files.items())
    }
    return {"files": files, "form": dict(sorted(request.form.items()))}


@app.get("/stream")
def stream() -> Response:
    def lines() -> Iterator[str]:
        for i in range(5):
            yield f"line {i}\n"

    return Response(lines(), mimetype="text/plain")


@app.get("/redirect")
def go() -> Response:
    return redirect("/json")  # type: ignore[return-value]


@app.get("/boom")
def boom() -> str:
    raise RuntimeError("the app raises")


@app.post("/echo")
def echo() -> Response:
    return Response(request.get_data(), mimetype="application/octet-stream")


@app.get("/query")
def query() -> dict[str, object]:
    args = {key: request.args.getlist(key) for key in sorted(request.args)}
    return {"args": args, "raw": request.query_string.decode("latin-1")}


@app.get("/caf\u00e9/\u65e5\u672c")
def non_ascii() -> dict[str, str]:
    return {"path": request.path}


@app.get("/cookie")
def cookie() -> dict[str, object]:
    return {"cookies": dict(sorted(request.cookies.items()))}


@app.get("/set-cookies")
def set_cookies() -> Response:
    response = Response("cookies set", mimetype="text/plain")
    response.set_cookie("a", "1")
    response.set_cookie("b", "two words", path="/x", httponly=True)
    response.set_cookie("c", "3", samesite="Lax")
    return response

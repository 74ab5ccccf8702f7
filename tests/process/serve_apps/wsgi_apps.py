"""WSGI apps for tests/process/test_serve_wsgi.py, each wrapped in ``wsgiref.validate``: any
breach of PEP 3333 by the server raises in the app (a 500 the tests see) or warns (the
``warnings`` filter below makes a warning an error, so it is a 500 too)."""

import os
import threading
import time
import warnings
from pathlib import Path
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)


def _plain(environ, start_response):
    path = environ["PATH_INFO"]
    method = environ["REQUEST_METHOD"]
    if path == "/raise":
        raise RuntimeError("the app broke")
    if path == "/stuck":
        threading.Event().wait()
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"chunk {i}\n".encode() for i in range(5))
    if path == "/hold":  # in flight until the file named by the query exists
        flag = Path(environ["QUERY_STRING"])
        flag.with_suffix(".started").touch()
        deadline = time.monotonic() + 20
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        body = str(os.getpid()).encode()
    elif method == "POST":  # (the validator allows read() only with a size)
        stream = environ["wsgi.input"]
        if environ.get("CONTENT_LENGTH"):
            body = stream.read(int(environ["CONTENT_LENGTH"]))
        else:  # chunked: read to the end, in pieces
            body = b"".join(iter(lambda: stream.read(4096), b""))
    elif path == "/environ":
        keys = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "wsgi.url_scheme")
        body = "\n".join(f"{k}={environ[k]}" for k in keys).encode()
    elif path == "/slow":
        time.sleep(0.3)
        body = str(os.getpid()).encode()
    else:
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = validator(_plain)

"""The HTTP worker: any ASGI 3 app over HTTP/1.1, parsed by h11, on uvloop.

``HTTPWorker`` is the worker type ``prefork serve`` runs; ``HTTPConfig`` holds its options.
"""

from prefork.http._asgi import ClientDisconnected
from prefork.http._config import (
    HTTPConfig,
    HTTPConfigError,
    add_serve_arguments,
    worker_options_from_args,
)
from prefork.http._lifespan import LifespanFailure
from prefork.http._server import AppImportError, HTTPWorker

__all__ = [
    "AppImportError",
    "ClientDisconnected",
    "HTTPConfig",
    "HTTPConfigError",
    "HTTPWorker",
    "LifespanFailure",
    "add_serve_arguments",
    "worker_options_from_args",
]

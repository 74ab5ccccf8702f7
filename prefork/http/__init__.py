"""The HTTP worker: any ASGI 3 app over HTTP/1.1, parsed by h11, on uvloop.

``HTTPWorker`` is the worker type ``prefork serve`` runs; ``HTTPConfig`` holds its options.

It may import ``core`` and the public ``worker`` (the base class it extends): the HTTP worker
knows nothing of the master that forks it.
"""

from prefork.http._app import AppImportError
from prefork.http._asgi import ClientDisconnected
from prefork.http._config import HTTPConfig
from prefork.http._lifespan import LifespanFailure
from prefork.http._server import HTTPWorker

__all__ = [
    "AppImportError",
    "ClientDisconnected",
    "HTTPConfig",
    "HTTPWorker",
    "LifespanFailure",
]

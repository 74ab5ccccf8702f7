"""The HTTP worker: imports the app after fork, runs lifespan, serves the inherited sockets,
and drains on SIGTERM (aiohttp ``SockSite``'s shape: stop accepting, let busy connections
finish and idle keep-alive ones reach their keep-alive deadline, then lifespan shutdown).
Keep ``keep_alive`` below the master's ``graceful_timeout`` (5 s and 30 s by default), or the
master's SIGKILL ends a drain before lifespan shutdown runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

from prefork.http._accept import Acceptor, Share
from prefork.http._app import import_app, import_module, served_interface
from prefork.http._config import HTTPConfig
from prefork.http._connection import HTTPProtocol
from prefork.http._lifespan import Lifespan
from prefork.http._state import ServerState
from prefork.http._tls import server_context
from prefork.http._wsgi_environ import base_environ
from prefork.http._wsgi_pool import WSGIPool
from prefork.worker import Worker

logger = logging.getLogger("prefork.http")


#: The part of the master's graceful timeout that idle connections may use on a drain.
GRACE_SHARE = 0.8


class HTTPWorker(Worker):
    """A worker serving an ASGI 3 app over HTTP/1.1 on the broker's sockets.

    Options (``self.options``): the fields of ``HTTPConfig`` (``app`` is required).
    ``init()`` raises ``ConfigError``, ``AppImportError``, the app's own import errors,
    or ``LifespanFailure``; each is a boot failure for the master.
    """

    url_scheme = "http"

    #: The master's answer to a connection while the broker is drained.
    drained_reply = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 20\r\nconnection: close\r\n\r\nService unavailable\n"
    )

    @classmethod
    def url_scheme_for(cls, options: Mapping[str, Any]) -> str:
        return "https" if options.get("ssl_certfile") else cls.url_scheme

    @classmethod
    def title_for(cls, options: Mapping[str, Any]) -> str:
        app = options.get("app")
        return app if isinstance(app, str) else ""

    @classmethod
    def drained_reply_for(cls, options: Mapping[str, Any]) -> bytes:
        # A 503 in plain text means nothing to a TLS client: it gets a reset instead.
        return b"" if options.get("ssl_certfile") else cls.drained_reply

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise ``ConfigError`` unless ``options`` make a valid ``HTTPConfig``."""
        server_context(HTTPConfig.from_options(options))  # readable key and certificate

    @classmethod
    def prepare_template(cls, options: Mapping[str, Any]) -> None:
        """The template imports the app's module; each worker makes the app (a factory runs
        there) and runs its lifespan after the fork."""
        import_module(HTTPConfig.from_options(options))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = HTTPConfig.from_options(self.options)
        self.state: ServerState | None = None
        self.servers: list[Acceptor] = []
        self.share: Share | None = None
        self.lifespan: Lifespan | None = None
        self.pool: WSGIPool | None = None
        self._retiring = False

    async def init(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        app = import_app(config)  # an error reaches the master, which prints it once
        pool = None
        if served_interface(app, config.interface) == "wsgi":
            pool = self.pool = WSGIPool(
                app,
                base_environ(threads=config.threads),
                config.threads,
                timeout=self.timeout,
                on_stuck=self._retire_once,
            )
            pool.start()
        elif config.threads != 1:
            logger.warning(
                "--threads %d is ignored: an ASGI app runs on the event loop", config.threads
            )
        self._tell_interface(pool)
        state = self.state = ServerState(
            config, app, loop, retire=self.retire, report=self.report, pool=pool
        )
        lifespan_mode = "off" if pool is not None else config.lifespan  # no lifespan in WSGI
        lifespan = self.lifespan = Lifespan(app, lifespan_mode, state.lifespan_state)
        await lifespan.startup()
        tls: dict[str, Any] = {}
        context = server_context(self.config)  # read afresh: a reload rotates certificates
        if context is not None:  # the handshake counts against the header timeout
            tls = {"ssl": context, "ssl_handshake_timeout": self.config.header_timeout}
        share = self.share = Share(self.board, self.slot, state.connections)
        state.on_closed = share.connection_closed
        for sock in self.sockets:
            sock.setblocking(False)
            server = Acceptor(loop, sock, partial(HTTPProtocol, state), share, tls=tls)
            server.start()
            self.servers.append(server)
        state.start_sweeping()

    def _tell_interface(self, pool: WSGIPool | None) -> None:
        """Say once (by the first worker) how the app is served."""
        if self.id != 1:
            return
        how = "an ASGI app" if pool is None else f"a WSGI app, {pool.size} thread(s) per worker"
        logger.info(
            "serving %s as %s (--interface %s)",
            self.title_for(self.options),
            how,
            self.config.interface,
        )

    def _retire_once(self) -> None:
        """A WSGI thread is stuck: ask for this worker's replacement (once)."""
        if not self._retiring:
            self._retiring = True
            self.retire()

    async def prepare_for_shutdown(self) -> None:
        """Drain: stop accepting, finish in-flight requests, close, lifespan shutdown, exit."""
        try:
            await self.drain()
        finally:
            self.shutdown()

    async def drain(self) -> None:
        """Everything ``prepare_for_shutdown`` does except leaving."""
        for server in self.servers:
            server.close()
        state = self.state
        if state is not None:
            state.draining = True  # a connection made from now on starts draining at once
        if self.share is not None:  # what was accepted is drained with the rest, waited for
            await self.share.settled(within=self.config.keep_alive)  # as an idle connection
        if state is not None:
            # Idle keep-alive connections wait for their deadline, but never past most of the
            # graceful timeout: lifespan shutdown must still run before the master's SIGKILL.
            # WebSockets get 1012 (Service Restart) when a new worker takes over, else 1001.
            code = 1012 if self.replaced else 1001
            await state.drain(GRACE_SHARE * self.graceful_timeout or None, close_code=code)
            state.stop_sweeping()
            state.send_report()  # the last one: what this worker counted is not lost
        if self.lifespan is not None:
            await self.lifespan.shutdown()

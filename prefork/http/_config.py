"""The HTTP worker's options, each declared once (see ``prefork/core/_options.py``): the same
declarations check ``HTTPConfig`` and give ``prefork serve`` its flags.

Every bad value raises ``ConfigError`` with one line saying what is wrong and what to do.
No I/O here: the app is imported later, in the worker, after fork.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prefork.core._options import (
    REQUIRED,
    ConfigError,
    build,
    check_fields,
    maybe_text,
    one_of,
    option,
    seconds,
    switch,
    text,
    truth,
    whole,
)
from prefork.http import _checks
from prefork.http._access import DEFAULT_ACCESS_FORMAT

LIFESPAN_MODES = ("auto", "on", "off")
WS_MODES = ("auto", "none", "wsproto")
HTTP_MODES = ("auto", "h11")
INTERFACES = ("auto", "asgi", "wsgi")
#: The most threads --threads may give a worker (each holds a stack and a request).
MAX_THREADS = 1024
#: The most a request head, its line or one field may be allowed (1 MiB): past that, one
#: client's head would hold a worker's memory.
MAX_HEAD_BYTES = 1 << 20
#: The most fields a head may be allowed (gunicorn's ceiling too).
MAX_HEAD_FIELDS = 32768
#: The largest WebSocket message --ws-max-size may allow (1 GiB).
MAX_WS_MESSAGE = 1 << 30


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPConfig:
    """Options of one HTTP worker (every worker of a broker shares them).

    ``app`` is ``"module:attr"`` (imported in the worker after fork) or an ASGI callable.
    Timeouts are in seconds; ``body_timeout`` bounds a stalled request body and a client that
    stops reading its response. ``limit_request_body`` is in bytes, 0 for no limit (413).
    Raises ``ConfigError`` on a bad value.
    """

    app: str | Callable[..., Any] = option(
        REQUIRED,
        "the ASGI app as module:attr, e.g. main:app",
        _checks.app_spec,
        "app",
        metavar="APP",
    )
    factory: bool = option(
        False, "APP is a callable returning the ASGI app", switch, "--factory", parse=None
    )
    interface: str = option(
        "auto",
        "the app's interface: auto (told by its signature), asgi, or wsgi",
        one_of(*INTERFACES),
        "--interface",
        choices=INTERFACES,
    )
    threads: int = option(
        1,
        "WSGI: threads per worker running the app (an ASGI app ignores it, with a warning)",
        whole(1, MAX_THREADS),
        "--threads",
        metavar="N",
        parse=int,
    )
    app_dir: str = option(".", "directory added to sys.path to import APP", text, "--app-dir")
    root_path: str = option(
        "", "ASGI root_path, for an app mounted below a prefix", _checks.root_path, "--root-path"
    )
    proxy_headers: bool = option(
        False,
        "trust X-Forwarded-For/-Proto from --forwarded-allow-ips",
        switch,
        "--proxy-headers",
        parse=None,
    )
    forwarded_allow_ips: tuple[str, ...] = option(
        ("127.0.0.1",),
        "comma-separated proxy IPs or networks to trust, unix (unix-socket peers), or *",
        _checks.networks,
        "--forwarded-allow-ips",
        metavar="IPS",
    )
    lifespan: str = option(
        "auto",
        "ASGI lifespan: auto (if the app supports it), on, off",
        one_of(*LIFESPAN_MODES),
        "--lifespan",
        choices=LIFESPAN_MODES,
    )
    access_log: bool = option(
        False,
        "log one line per request to the prefork.access logger",
        switch,
        "--access-log",
        parse=None,
        negatable=True,
    )
    keep_alive: float = option(
        5.0,
        "close idle keep-alive connections after this long",
        seconds(positive=True),
        "--keep-alive",
        "--timeout-keep-alive",
        metavar="SECONDS",
        parse=float,
    )
    limit_concurrency: int | None = option(
        None,
        "per worker, answer 503 beyond N connections or requests in flight",
        whole(1, optional=True),
        "--limit-concurrency",
        metavar="N",
        parse=int,
    )
    max_requests: int = option(
        0,
        "replace a worker after N requests (rolling, 0 = never)",
        whole(0),
        "--max-requests",
        "--limit-max-requests",
        metavar="N",
        parse=int,
    )
    max_requests_jitter: int = option(
        0,
        "add a random 0..N to --max-requests per worker",
        whole(0),
        "--max-requests-jitter",
        metavar="N",
        parse=int,
    )
    header_timeout: float = option(
        30.0,
        "close a connection whose request head takes longer",
        seconds(positive=True),
        "--header-timeout",
        metavar="SECONDS",
        parse=float,
    )
    body_timeout: float = option(
        60.0,
        "close a connection whose body stalls this long, either way",
        seconds(positive=True),
        "--body-timeout",
        metavar="SECONDS",
        parse=float,
    )
    limit_request_line: int = option(
        8190,
        "longest request line, in bytes (414 beyond)",
        whole(1, MAX_HEAD_BYTES),
        "--limit-request-line",
        metavar="BYTES",
        parse=int,
    )
    limit_request_fields: int = option(
        100,
        "most header fields in a request (431 beyond)",
        whole(1, MAX_HEAD_FIELDS),
        "--limit-request-fields",
        metavar="N",
        parse=int,
    )
    limit_request_field_size: int = option(
        8190,
        "longest header field line in bytes, its CRLF counted, as gunicorn does (431 beyond)",
        whole(1, MAX_HEAD_BYTES),
        "--limit-request-field-size",
        "--limit-request-field_size",
        metavar="BYTES",
        parse=int,
    )
    limit_request_head: int = option(
        65536,
        "largest request head, in bytes (431 beyond)",
        whole(1, MAX_HEAD_BYTES),
        "--limit-request-head",
        metavar="BYTES",
        parse=int,
    )
    limit_request_body: int = option(
        0,
        "answer 413 to a request body over BYTES (0 = no limit)",
        whole(0),
        "--limit-request-body",
        metavar="BYTES",
        parse=int,
    )
    server_header: bool = option(
        True, "send a Server header", switch, "--server-header", parse=None, negatable=True
    )
    date_header: bool = option(
        True, "send a Date header", switch, "--date-header", parse=None, negatable=True
    )
    headers: tuple[tuple[str, str], ...] = option(
        (),
        "a header every response carries, as 'Name: value'; repeatable",
        _checks.header_fields,
        "--header",
        metavar="'NAME: VALUE'",
        repeat=True,
    )
    access_log_format: str = option(
        DEFAULT_ACCESS_FORMAT,
        "access log line, with gunicorn's atoms: %%(h)s client, %%(r)s request line, "
        "%%(s)s status, %%(b)s bytes, %%(L)s seconds, %%(M)s ms, %%({name}i)s a header...",
        _checks.access_format,
        "--access-logformat",
        metavar="FORMAT",
    )

    ssl_certfile: str | None = option(
        None,
        "serve HTTPS with this certificate (chain) file, read again by every reload",
        maybe_text,
        "--ssl-certfile",
        "--certfile",
        metavar="FILE",
    )
    ssl_keyfile: str | None = option(
        None,
        "the certificate's private key (when not in the certificate file)",
        maybe_text,
        "--ssl-keyfile",
        "--keyfile",
        metavar="FILE",
    )
    ssl_keyfile_password: str | None = option(
        None, "the private key's password", maybe_text, "--ssl-keyfile-password", metavar="TEXT"
    )
    ssl_ca_certs: str | None = option(
        None,
        "CA certificates to verify clients with (see --ssl-cert-reqs)",
        maybe_text,
        "--ssl-ca-certs",
        "--ca-certs",
        metavar="FILE",
    )
    ssl_cert_reqs: int = option(
        int(ssl.CERT_NONE),
        "client certificates: 0 none, 1 optional, 2 required",
        _checks.cert_reqs,
        "--ssl-cert-reqs",
        metavar="N",
        parse=int,
    )
    ssl_ciphers: str = option(
        "TLSv1", "OpenSSL cipher list", text, "--ssl-ciphers", metavar="CIPHERS"
    )
    ssl_version: int = option(
        int(ssl.PROTOCOL_TLS_SERVER),
        "the ssl module's protocol constant",
        _checks.tls_protocol,
        "--ssl-version",
        metavar="N",
        parse=int,
    )

    http: str = option(
        "auto",
        "request parser: auto (a strict fast path for common heads, h11 for the rest) or h11 "
        "(h11 for every head); both give the same answers",
        one_of(*HTTP_MODES),
        "--http",
        choices=HTTP_MODES,
    )
    ws: str = option(
        "auto",
        "WebSockets: auto (wsproto), wsproto, or none (an upgrade is a plain HTTP request)",
        one_of(*WS_MODES),
        "--ws",
        choices=WS_MODES,
    )
    ws_max_size: int = option(
        16 * 1024 * 1024,
        "largest WebSocket message, in bytes (closed with 1009 beyond)",
        whole(1, MAX_WS_MESSAGE),
        "--ws-max-size",
        metavar="BYTES",
        parse=int,
    )
    ws_max_queue: int = option(
        32,
        "WebSocket messages waiting for the app before reading pauses (it also pauses at "
        "--ws-max-size bytes of them)",
        whole(1),
        "--ws-max-queue",
        metavar="N",
        parse=int,
    )
    ws_ping_interval: float = option(
        20.0,
        "ping each WebSocket this often (0 = never)",
        seconds(),
        "--ws-ping-interval",
        metavar="SECONDS",
        parse=float,
    )
    ws_ping_timeout: float = option(
        20.0,
        "close a WebSocket whose pong takes longer (0 = wait forever)",
        seconds(),
        "--ws-ping-timeout",
        metavar="SECONDS",
        parse=float,
    )
    ws_per_message_deflate: bool = option(
        True,
        "accept a WebSocket client's offer of per-message deflate (true or false)",
        switch,
        "--ws-per-message-deflate",
        metavar="BOOL",
        parse=truth,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigError("ssl_keyfile needs ssl_certfile; give --ssl-certfile too")
        if self.max_requests_jitter and not self.max_requests:
            raise ConfigError(
                "max_requests_jitter needs max_requests; set --max-requests too or drop it"
            )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> HTTPConfig:
        """Build a config from a worker's options mapping (the broker's keyword options).

        Raises ``ConfigError`` on an unknown key, a missing app or a bad value.
        """
        if "app" not in options:
            raise ConfigError("app is missing; pass app='module:attr'")
        return build(cls, "HTTP", options)

    def trusts(self, host: str | None) -> bool:
        """Whether proxy headers from a client at ``host`` are believed.

        A unix-socket peer (``host`` None) only when ``unix`` (or ``*``) is listed: whoever
        may connect to the socket would otherwise choose the client address apps see.
        """
        allowed = self.forwarded_allow_ips
        if "*" in allowed:
            return True
        if host is None:
            return "unix" in allowed
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(n, strict=False) for n in allowed if n != "unix")

"""The target of ``prefork load``: where to connect, and the request bytes, built once."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[^\r\n\x00]*")
_PATH = re.compile(r"/[!-~]*|\*")


class Target:
    """Where to connect, and the request to send there, built once.

    ``Target(url, method="GET", headers=(), body=None, insecure=False)``: ``url`` is
    ``http[s]://HOST[:PORT][/PATH][?QUERY]`` (HOST may be an IPv6 literal in brackets; PORT is
    80, or 443 for https, when not given), ``headers`` are ``"Name: value"`` strings (a Host
    among them replaces ours), and a ``body`` is sent with its Content-Length. https is TLS
    with SNI (HOST), the certificate checked against the system's CAs unless ``insecure``.
    ``tls`` holds the keywords ``create_connection`` takes for it (none for http). Raises
    ``ValueError`` on a URL it cannot load, or a malformed method, header or path.
    """

    __slots__ = (
        "authority",
        "head_request",
        "headers",
        "host",
        "port",
        "request",
        "rotation",
        "tls",
    )

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Iterable[str] = (),
        body: bytes | None = None,
        insecure: bool = False,
    ) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"cannot load {url!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname or port == 0:
            raise ValueError(f"cannot load {url!r}: give http[s]://HOST[:PORT]/PATH")
        if parts.username is not None:
            raise ValueError(f"cannot load {url!r}: send credentials with -H 'Authorization: ...'")
        self.host = parts.hostname
        default = 443 if scheme == "https" else 80
        self.port = port or default
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if self.port == default else f"{host}:{self.port}"
        self.tls: dict[str, Any] = {}
        if scheme == "https":
            context = ssl.create_default_context()
            if insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self.tls = {"ssl": context, "server_hostname": self.host}
        fields = []
        for line in headers:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError(f"header {line!r} must look like 'Name: value'")
            fields.append((name.strip(), value.strip()))
        self.headers = tuple(fields)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.request = self.build(method, path, (), body)
        self.head_request = method == "HEAD"
        #: ``--targets``: the requests sent in turn instead of ``request`` (with whether each
        #: is a HEAD): ``_targets.target_of`` sets them.
        self.rotation: tuple[tuple[bytes, bool], ...] = ()

    def build(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> bytes:
        """The bytes of a request to this target: ``headers`` replace the target's own of the
        same names, Host is ours unless one of them sets it, a body gets its Content-Length.
        Raises ``ValueError`` on a malformed method, path or field."""
        if not _TOKEN.fullmatch(method):
            raise ValueError(f"method {method!r} is not an HTTP token")
        if not _PATH.fullmatch(path):
            raise ValueError(
                f"path {path!r} must start with / and hold printable ASCII only "
                "(percent-encode spaces and other characters)"
            )
        ours = [(name.strip(), value.strip()) for name, value in headers]
        names = {name.lower() for name, _ in ours}
        fields = [(n, v) for n, v in self.headers if n.lower() not in names] + ours
        lines = [f"{method} {path} HTTP/1.1"]
        if not any(name.lower() == "host" for name, _ in fields):
            lines.append(f"Host: {self.authority}")
        for name, value in fields:
            if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
                raise ValueError(f"header {name!r}: {value!r} is not a valid field")
            if body is not None and name.lower() == "content-length":
                raise ValueError("Content-Length is set from the body; do not give it")
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        try:
            head = "\r\n".join(lines).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise ValueError(f"a field holds a character outside Latin-1: {exc}") from None
        return head + b"\r\n\r\n" + (body or b"")

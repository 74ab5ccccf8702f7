"""TLS for the HTTP worker: the server context, built from the certificate files.

Built twice on purpose: once in the master before anything forks (``HTTPWorker.check_options``:
a bad or unreadable key or certificate is one ``ConfigError`` line), and again by every worker
as it starts, so a SIGHUP reload reads the files afresh (certificate rotation) and a bad new
certificate fails the new workers' start, which rolls the reload back like broken code.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator

from prefork.core._options import ConfigError
from prefork.http._config import HTTPConfig


def server_context(config: HTTPConfig) -> ssl.SSLContext | None:
    """The TLS context ``config`` asks for, or None for plain HTTP. Raises ``ConfigError``
    naming the option at fault."""
    if config.ssl_certfile is None:
        return None
    with _refused(f"TLS protocol {config.ssl_version}", "check --ssl-version"):
        context = ssl.SSLContext(config.ssl_version)
    with _refused(
        f"the TLS certificate {config.ssl_certfile!r}",
        "check --ssl-certfile, --ssl-keyfile and --ssl-keyfile-password",
    ):
        context.load_cert_chain(
            config.ssl_certfile, config.ssl_keyfile, config.ssl_keyfile_password
        )
    context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    if config.ssl_ca_certs is not None:
        with _refused(f"the CA certificates {config.ssl_ca_certs!r}", "check --ssl-ca-certs"):
            context.load_verify_locations(config.ssl_ca_certs)
    if config.ssl_ciphers:
        with _refused(f"the cipher list {config.ssl_ciphers!r}", "check --ssl-ciphers"):
            context.set_ciphers(config.ssl_ciphers)
    context.set_alpn_protocols(["http/1.1"])
    return context


@contextlib.contextmanager
def _refused(what: str, hint: str) -> Iterator[None]:
    """An error of the ssl module as one ``ConfigError`` line: what it could not use, why,
    and which option to check."""
    try:
        yield
    except (OSError, ssl.SSLError, ValueError) as exc:
        # str() of an SSLError without strerror (set_ciphers) is its args tuple's repr
        reason = getattr(exc, "strerror", None) or " ".join(map(str, exc.args))
        raise ConfigError(f"cannot use {what}: {reason}; {hint}") from None

"""TLS for the HTTP worker: the server context, built from the certificate files.

Built twice on purpose: once in the master before anything forks (``HTTPWorker.check_options``:
a bad or unreadable key or certificate is one ``ConfigError`` line), and again by every worker
as it starts, so a SIGHUP reload reads the files afresh (certificate rotation) and a bad new
certificate fails the new workers' start, which rolls the reload back like broken code.
"""

from __future__ import annotations

import ssl

from prefork._options import ConfigError
from prefork.http._config import HTTPConfig


def server_context(config: HTTPConfig) -> ssl.SSLContext | None:
    """The TLS context ``config`` asks for, or None for plain HTTP. Raises ``ConfigError``."""
    if config.ssl_certfile is None:
        return None
    try:
        context = ssl.SSLContext(config.ssl_version)
        context.load_cert_chain(
            config.ssl_certfile, config.ssl_keyfile, config.ssl_keyfile_password
        )
        context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
        if config.ssl_ca_certs is not None:
            context.load_verify_locations(config.ssl_ca_certs)
        if config.ssl_ciphers:
            context.set_ciphers(config.ssl_ciphers)
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(
            f"cannot use the TLS certificate {config.ssl_certfile!r}: {reason}; "
            "check --ssl-certfile, --ssl-keyfile and --ssl-keyfile-password"
        ) from None
    context.set_alpn_protocols(["http/1.1"])
    return context

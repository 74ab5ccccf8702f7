"""The checks of the HTTP worker's options that ``_options`` does not have: each takes the
option's name and value, returns the value (maybe normalised) or raises ``ConfigError`` with one
line saying what is wrong and what to do.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from typing import Any

from prefork.core._options import ConfigError, shown, text
from prefork.http._access import AtomProbe


def app_spec(name: str, value: Any) -> Any:
    if isinstance(value, str):
        module, sep, attr = value.partition(":")
        if not sep or not module.strip() or not attr.strip():
            raise ConfigError(
                f"app {shown(value)} is not 'module:attr'; name the app like 'main:app'"
            )
    elif not callable(value):
        raise ConfigError("app must be 'module:attr' or an ASGI callable")
    return value


def root_path(name: str, value: Any) -> Any:
    text(name, value)
    if value and (not value.startswith("/") or value == "/"):
        raise ConfigError(f"root_path {shown(value)} must start with '/' (e.g. /api) or be empty")
    return value


def networks(name: str, value: Any) -> Any:
    """IPs or networks, ``unix`` (unix-socket peers) or ``*``; a comma-separated string is
    split. Kept as a tuple."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ConfigError(
            f"{name} must be a string of comma-separated IPs or a list of them, got {shown(value)}"
        )
    out: list[str] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        if item not in ("*", "unix"):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ConfigError(
                    f"{name}: {shown(item)} is not an IP address or network; "
                    "use e.g. 127.0.0.1,10.0.0.0/8,unix or *"
                ) from None
        out.append(item)
    return tuple(out)


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FIELD_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")


def header_fields(name: str, value: Any) -> Any:
    """``'Name: value'`` strings (or pairs) -> ``((name, value), ...)``, each checked."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{name} must be a list of 'Name: value' strings, got {shown(value)}")
    out = []
    for item in items:
        if isinstance(item, str):
            field, sep, text = item.partition(":")
            if not sep:
                raise ConfigError(f"header {shown(item)} must look like 'Name: value'")
        elif isinstance(item, list | tuple) and len(item) == 2:
            field, text = item
        else:
            raise ConfigError(f"header {shown(item)} must be 'Name: value' or a (name, value) pair")
        field, text = str(field).strip(), str(text).strip()
        if not _TOKEN.match(field) or not _FIELD_VALUE.match(text):
            raise ConfigError(
                f"header {shown(field)}: {shown(text)} is not a valid header; use 'Name: value' "
                "with a token name and no control characters"
            )
        out.append((field, text))
    return tuple(out)


#: The ssl module's PROTOCOL_* constants.
TLS_PROTOCOLS = tuple(sorted(int(p) for p in type(ssl.PROTOCOL_TLS_SERVER)))


def tls_protocol(name: str, value: Any) -> Any:
    if value not in TLS_PROTOCOLS or isinstance(value, bool):
        raise ConfigError(
            f"{name} must be one of the ssl module's PROTOCOL_* constants "
            f"({', '.join(map(str, TLS_PROTOCOLS))}), got {shown(value)}"
        )
    return value


def cert_reqs(name: str, value: Any) -> Any:
    if value not in (0, 1, 2) or isinstance(value, bool):
        raise ConfigError(
            f"{name} must be 0 (none), 1 (optional) or 2 (required), got {shown(value)}"
        )
    return value


def access_format(name: str, value: Any) -> Any:
    text(name, value)
    try:
        value % AtomProbe()
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"access log format {shown(value)} is not valid: {exc}") from None
    return value

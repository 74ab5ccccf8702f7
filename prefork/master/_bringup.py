"""The master's bring-up and tear-down, apart from its loop: binding every broker's
addresses, preloading worker classes, closing the listeners, and the words it says about
itself (the first log line, the process title).
"""

from __future__ import annotations

import builtins
import socket
from collections.abc import Mapping, MutableMapping

from prefork.core._options import ConfigError
from prefork.master import _child, _sockets
from prefork.master._broker import Broker
from prefork.worker import Worker

#: Each broker's worker: a class, or ``"module:attr"`` until preloaded.
Classes = MutableMapping[str, builtins.type[Worker] | str]
#: Each broker's listening sockets.
Listeners = MutableMapping[str, list[socket.socket]]


def bind_all(brokers: Mapping[str, Broker], sockets: Listeners) -> None:
    """Bind every broker's addresses (but a broker's sockets carried over an upgrade)."""
    for broker in brokers.values():
        if broker.type not in sockets:
            listen, backlog = broker.config.listen, broker.config.backlog
            sockets[broker.type] = [_sockets.bind(a, backlog) for a in listen]


def preload(brokers: Mapping[str, Broker], classes: Classes) -> None:
    """Import the worker class of every broker declared with ``preload``; a class that cannot
    be imported is a ``ConfigError``."""
    for broker in brokers.values():
        spec = classes[broker.type]
        if broker.config.preload and isinstance(spec, str):
            try:
                classes[broker.type] = _child.load_worker_class(spec)
            except Exception as exc:
                raise ConfigError(f"cannot preload {spec!r}: {exc}") from None


def close_listeners(sockets: Listeners) -> None:
    for socks in sockets.values():
        for sock in socks:
            _sockets.close_listener(sock)
    sockets.clear()


def describe(brokers: Mapping[str, Broker], classes: Classes, sockets: Listeners) -> str:
    """Each broker's workers and where they listen: URLs for worker types that have a
    ``url_scheme`` (the HTTP worker), so the first log line says what to open."""
    parts = []
    for name, broker in brokers.items():
        worker = classes[name]
        options = broker.config.worker_options
        scheme = "" if isinstance(worker, str) else worker.url_scheme_for(options)
        where = ", ".join(_sockets.describe(s, scheme) for s in sockets[name])
        parts.append(f"{name} x{broker.config.workers}" + (f" on {where}" if where else ""))
    return "; ".join(parts)


def title(brokers: Mapping[str, Broker], classes: Classes, name: str | None) -> str:
    """``prefork: master [APP]`` for ps: what the workers serve (a worker type may say, as the
    HTTP worker names its app), else the brokers and their counts."""
    labels = []
    for broker_name, broker in brokers.items():
        worker = classes[broker_name]
        label = "" if isinstance(worker, str) else worker.title_for(broker.config.worker_options)
        labels.append(label or f"{broker_name} x{broker.config.workers}")
    return f"{name or 'prefork'}: master [{', '.join(labels)}]"

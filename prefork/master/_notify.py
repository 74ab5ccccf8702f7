"""systemd's readiness protocol (sd_notify), for ``Type=notify`` and ``Type=notify-reload``.

Nothing is sent unless systemd handed us ``NOTIFY_SOCKET``. A failed send is logged, never
raised: readiness reporting must not take the master down.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping

log = logging.getLogger("prefork.master")


class Notifier:
    """Sends ``KEY=VALUE`` lines to systemd's notification socket, if there is one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: its real name starts with a NUL byte.
        self.address = "\0" + address[1:] if address.startswith("@") else address

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto("\n".join(fields).encode(), self.address)
            except OSError as exc:
                log.warning("could not notify systemd (%s): %s", " ".join(fields), exc)

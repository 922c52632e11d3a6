"""systemd's notify protocol (sd_notify(3)) for `Type=notify` services, in stdlib socket code.

    notify("READY=1", "STATUS=listening on 0.0.0.0:8080")   # once listening, database open
    notify("STOPPING=1", "STATUS=draining")                 # at the start of shutdown

Each call sends one datagram of newline-separated assignments to `$NOTIFY_SOCKET` (a path, or an
abstract socket written `@name`). Without `$NOTIFY_SOCKET` (not run by systemd) it does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

_log = logging.getLogger(__name__)


def notify(*assignments: str) -> bool:
    """Send `assignments` to systemd; True if sent, False if there is no socket or it failed.

    A failure is logged, never raised: the service must not die because systemd went away.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    elif not address.startswith("/"):
        _log.warning("NOTIFY_SOCKET is not a unix socket address", extra={"address": address})
        return False
    payload = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # called from the event loop: never wait on systemd
            sock.connect(address)
            sock.send(payload)
    except OSError as exc:
        _log.warning("sd_notify failed", extra={"error": str(exc)})
        return False
    return True

"""Browser Origin check on WebSocket upgrade (cross-site WebSocket hijacking defence)."""

from __future__ import annotations

import h11


def origin_allowed(request: h11.Request, allowed: tuple[str, ...]) -> bool:
    """Same-origin by default; listed origins (or "*") also pass. No Origin: not a browser."""
    origin = host = None
    for name, value in request.headers:
        if name == b"origin":
            origin = value.decode("latin-1").rstrip("/")
        elif name == b"host":
            host = value.decode("latin-1")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    return host is not None and origin in (f"http://{host}", f"https://{host}")

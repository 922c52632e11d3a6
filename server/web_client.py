"""The browser client, served at `/` from `server/static/` (no build step, no CDN)."""

from __future__ import annotations

from quart_trio import QuartTrio


def register_web_client(app: QuartTrio) -> None:
    """Add the web client's routes to `app` (filled in by the web client work, issue 5)."""

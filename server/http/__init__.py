"""The HTTP API (quart-trio), its bridge to hypercorn on the shared port, the web client."""

from server.http.api import HttpServices, create_http_app
from server.http.bridge import HttpBridge, ReplayStream
from server.http.web_client import content_security_policy

__all__ = [
    "HttpBridge",
    "HttpServices",
    "ReplayStream",
    "content_security_policy",
    "create_http_app",
]

"""Chat rules on authenticated connections: sessions, membership, limits, liveness, and the
WebSocket handler that runs a session over a transport connection."""

from server.chat.connection import ChatConnection, ConnState
from server.chat.membership import MembershipSync
from server.chat.ratelimit import UserRateLimiter
from server.chat.reaper import Reaper
from server.chat.registry import ConnectionRegistry
from server.chat.session import ChatServices
from server.chat.websocket import serve_websocket

__all__ = [
    "ChatConnection",
    "ChatServices",
    "ConnState",
    "ConnectionRegistry",
    "MembershipSync",
    "Reaper",
    "UserRateLimiter",
    "serve_websocket",
]

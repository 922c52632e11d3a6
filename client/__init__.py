"""hibiki's Python client: an async (trio) chat client on the documented protocol, with
reconnect and resume; `client.terminal` is the terminal client built on it."""

from ._backoff import Backoff
from ._client import ChatClient
from ._errors import (
    ApiError,
    AuthenticationError,
    ChatClientError,
    ClientClosed,
    LoginError,
    RequestError,
)
from ._events import ClientEvent, Disconnected
from ._http import LoginSession, RoomInfo, UserInfo
from ._socket import open_websocket
from ._unread import UnreadCounter

__all__ = [
    "ApiError",
    "AuthenticationError",
    "Backoff",
    "ChatClient",
    "ChatClientError",
    "ClientClosed",
    "ClientEvent",
    "Disconnected",
    "LoginError",
    "LoginSession",
    "RequestError",
    "RoomInfo",
    "UnreadCounter",
    "UserInfo",
    "open_websocket",
]

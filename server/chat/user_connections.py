"""A user's open connections on this process: who must hear of a change to that user.

Membership sync (a user joined or left a room elsewhere) and token revocation look connections
up by user. Behind `UserConnections` so a cluster can add, beside the local lookup, which
processes hold a user's connections; `LocalUserConnections` is one process's dict.
"""

from __future__ import annotations

from typing import Protocol

from server.chat.connection import ChatConnection


class UserConnections(Protocol):
    def add(self, conn: ChatConnection) -> None:
        """`conn` is authenticated as `conn.user_id` (and subscribed to the user's rooms)."""

    def discard(self, conn: ChatConnection) -> None:
        """`conn` is closing; a connection never added is ignored."""

    def of_user(self, user_id: int) -> list[ChatConnection]:
        """The user's connections on this process, in the order they were added (a copy)."""

    def everyone(self) -> list[ChatConnection]:
        """Every user's connections on this process (a copy): a new room is told to all."""


class LocalUserConnections:
    def __init__(self) -> None:
        self._by_user: dict[int, dict[ChatConnection, None]] = {}

    def add(self, conn: ChatConnection) -> None:
        self._by_user.setdefault(conn.user_id, {})[conn] = None

    def discard(self, conn: ChatConnection) -> None:
        conns = self._by_user.get(conn.user_id)
        if conns is None:
            return
        conns.pop(conn, None)
        if not conns:
            del self._by_user[conn.user_id]

    def of_user(self, user_id: int) -> list[ChatConnection]:
        return list(self._by_user.get(user_id, ()))

    def everyone(self) -> list[ChatConnection]:
        return [conn for conns in self._by_user.values() for conn in conns]

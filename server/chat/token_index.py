"""Open WebSockets by the login token they said hello with, so a revoked token closes them.

A connection is tracked from the moment its `hello` names a token, before the store has looked
the token up: a logout that lands during that lookup then still finds (and closes) it, instead of
the hello succeeding with a token that was already revoked. Keys are token hashes
(`storage.passwords.token_hash`), never tokens. Touched only from the trio thread.

`revoke` is the one entry point of a revocation. This process's own `POST /api/logout` calls it;
with several nodes, so does the control channel for every other node's logout
(server/redis/token_cache.py), before that node's logout is answered.
"""

from __future__ import annotations

from protocol import CloseCode
from server.chat.connection import ChatConnection


class TokenIndex:
    def __init__(self) -> None:
        self._by_token: dict[str, dict[ChatConnection, None]] = {}

    def track(self, conn: ChatConnection) -> None:
        """`conn` is saying (or said) hello with the token whose hash is `conn.token_hash`."""
        self._by_token.setdefault(conn.token_hash, {})[conn] = None

    def untrack(self, conn: ChatConnection) -> None:
        conns = self._by_token.get(conn.token_hash)
        if conns is None:
            return
        conns.pop(conn, None)
        if not conns:
            del self._by_token[conn.token_hash]

    def revoke(self, token_hash: str) -> None:
        """Close (4001) every connection of this process that used the token."""
        for conn in self._by_token.pop(token_hash, {}):
            conn.close(CloseCode.UNAUTHENTICATED, "token revoked")

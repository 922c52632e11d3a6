"""The HTTP API's profile and session routes (issue #15): `PATCH /api/me`, `GET /api/users/{name}`,
`GET /api/sessions`, `DELETE /api/sessions[/{id}]` and `POST /api/password` (docs/http.md).

Every revocation here goes through the logout's path (`HttpServices.token_revoked`, one call per
revoked token hash): the store deletes the tokens, then each one's open WebSockets close (4001)
on every node, in one shielded scope, so a client that hangs up cannot leave them open.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from quart import Response, request

from protocol import ErrorCode
from server.http._json import HttpError, decode_body, empty_response, json_response
from server.http._requests import (
    USER_PATTERN,
    DisplayNameChange,
    PasswordChange,
    request_body,
    revoke_all_param,
)
from server.http.login_guard import LoginGuard
from storage import Profile, Store, User
from storage.passwords import token_hash

Authenticate = Callable[[], Awaitable[tuple[User, str]]]
_USER = re.compile(USER_PATTERN)
_SESSION_ID = re.compile(r"^[0-9a-f]{16}\Z")  # what storage.accounts issues


class SessionRoutes:
    """The handlers; `authenticate` is the API's (401 for a missing, unknown or expired token)."""

    def __init__(
        self,
        store: Store,
        authenticate: Authenticate,
        guard: LoginGuard,
        token_revoked: Callable[[str], Awaitable[None]],
    ) -> None:
        self._store = store
        self._authenticate = authenticate
        self._guard = guard
        self._token_revoked = token_revoked

    async def me(self) -> Response:
        user, _ = await self._authenticate()
        rooms = await self._store.rooms_of(user.id)
        return json_response({"user": await self._profile_json(user), "rooms": rooms})

    async def update_me(self) -> Response:
        user, _ = await self._authenticate()
        body = decode_body(await request_body(), DisplayNameChange)
        try:
            await self._store.set_display_name(user.id, body.display_name)
        except ValueError as exc:
            raise HttpError(400, ErrorCode.BAD_FIELD, str(exc)) from None
        return json_response({"user": await self._profile_json(user)})

    async def user(self, name: str) -> Response:
        await self._authenticate()
        profile = await self._store.profile(name) if _USER.match(name) else None
        if profile is None:
            raise HttpError(404, ErrorCode.NOT_FOUND, f"no user named {name!r}")
        return json_response(profile_json(profile))

    async def sessions(self) -> Response:
        user, token = await self._authenticate()
        current = token_hash(token)
        sessions = [
            {
                "id": session.id,
                "device": session.device,
                "created_at": session.created_at,
                "last_used_at": session.last_used_at,
                "expires_at": session.expires_at,
                "current": session.token_hash == current,
            }
            for session in await self._store.sessions(user.id)
        ]
        return json_response({"sessions": sessions})

    async def revoke_one(self, session_id: str) -> Response:
        user, _ = await self._authenticate()
        with trio.CancelScope(shield=True):
            revoked = None
            if _SESSION_ID.match(session_id):  # an id we could not have issued names nothing
                revoked = await self._store.revoke_session(user.id, session_id)
            if revoked is not None:
                await self._closed_everywhere([revoked])
        if revoked is None:  # unknown, or another user's: the same answer, so ids are not probed
            raise HttpError(404, ErrorCode.NOT_FOUND, f"no session {session_id!r}")
        return empty_response(204)

    async def revoke_many(self) -> Response:
        user, token = await self._authenticate()
        keep = None if revoke_all_param() else token
        with trio.CancelScope(shield=True):
            revoked = await self._store.revoke_sessions(user.id, keep)
            await self._closed_everywhere(revoked)
        return json_response({"revoked": len(revoked)})

    async def change_password(self) -> Response:
        user, token = await self._authenticate()
        body = decode_body(await request_body(), PasswordChange)
        client = self._guard.client_of(request)
        # The login's throttle and KDF slots: guessing the old password here costs what
        # guessing it at /api/login costs, and counts against the same account.
        async with self._guard.attempt(client, user.name):
            with trio.CancelScope(shield=True):
                revoked = await self._store.change_password(user, body.old, body.new, token)
                if revoked is not None:
                    await self._closed_everywhere(revoked)
        if revoked is None:
            self._guard.failed(client, user.name)
            raise HttpError(401, ErrorCode.BAD_CREDENTIALS, "the old password is wrong")
        self._guard.succeeded(user.name)
        return json_response({"revoked": len(revoked)})

    async def _closed_everywhere(self, hashes: Sequence[str]) -> None:
        """Each revoked token's WebSockets closed on every node (each call bounded), at once."""
        async with trio.open_nursery() as nursery:
            for hashed in hashes:
                nursery.start_soon(self._token_revoked, hashed)

    async def _profile_json(self, user: User) -> dict[str, Any]:
        profile = await self._store.profile(user.name)
        display_name = None if profile is None else profile.display_name
        last_seen = None if profile is None else profile.last_seen
        return {
            "id": user.id,
            "name": user.name,
            "display_name": display_name,
            "last_seen": last_seen,
        }


def profile_json(profile: Profile) -> dict[str, Any]:
    return {
        "name": profile.user.name,
        "display_name": profile.display_name,
        "last_seen": profile.last_seen,
    }

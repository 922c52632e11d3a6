"""The HTTP API (accounts, rooms, history, batch import, health) as a quart-trio app.

The app holds no state of its own: everything comes from `HttpServices`, built once by the server.
Handlers run on the trio thread; the store does its database work on its own threads. The API is
documented in docs/http.md; errors use `protocol.ErrorCode`, like the WebSocket protocol.

Rules the handlers follow:
- authenticate first (401), then the room (404 unknown, 403 not a member), then the body (413/422);
- a write and the notification that must follow it (`publish`, `membership_changed`,
  `token_revoked`) run in one shielded scope, so a client that hangs up mid-request cannot leave a
  committed message unpublished, a membership change unannounced or a revoked token's WebSockets
  open.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

import protocol
from protocol import ROOM_PATTERN, ErrorCode
from server.config import Config
from server.http._json import (
    HttpError,
    decode_body,
    empty_response,
    error_response,
    http_exception_response,
    json_response,
)
from server.http._requests import DEFAULT_HISTORY_LIMIT as DEFAULT_HISTORY_LIMIT
from server.http._requests import USER_PATTERN as USER_PATTERN
from server.http._requests import (
    BatchImport,
    BatchItem,
    Login,
    NewRoom,
    ReadCursor,
    Registration,
    history_params,
    request_body,
)
from server.http.login_guard import LoginGuard
from server.http.web_client import register_web_client
from storage import Conflict, NewMessage, NotFound, Room, Store, User
from storage.passwords import token_hash

MiB = 1024 * 1024
MAX_BODY = 1 * MiB
MAX_TOKEN_LENGTH = 256  # longer than any token we issue; refused before a store lookup
_ROOM = re.compile(ROOM_PATTERN)


async def _revoked_nowhere(token_hash: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class HttpServices:
    """What the HTTP app needs from the server; the app reads nothing else."""

    store: Store
    server_id: str
    token_ttl: float  # seconds a login token is valid
    max_text: int  # same text limit as the WebSocket protocol
    max_batch: int  # max messages in one batch import
    # Sync, called on the trio thread after a batch import committed: delivers live.
    publish: Callable[[Sequence[protocol.Message]], None]
    # (room, user_id, member?) after a membership change via HTTP: the server updates its cache
    # and the user's open connections.
    membership_changed: Callable[[str, int, bool], Awaitable[None]]
    # None when ready, else the reason (for /readyz).
    readiness: Callable[[], str | None]
    # The bus for /healthz and /readyz: "local", "redis: ok" or "redis: degraded".
    bus_status: Callable[[], str] = lambda: "local"
    # Read replicas for /readyz, each {name, state, lag_seconds, ...}: shown, never failing it.
    replicas: Callable[[], list[dict[str, object]]] | None = None
    # The Prometheus exposition for /metrics: (body, content type); None serves no /metrics.
    metrics: Callable[[], tuple[bytes, str]] | None = None
    # Told of each refused credential: "password" (login) or "token" (bearer token).
    auth_failed: Callable[[str], None] = lambda kind: None
    # Called with a token's hash once the store revoked it (logout): the server closes the open
    # WebSockets that said hello with it, on every node, and returns once it has (bounded).
    token_revoked: Callable[[str], Awaitable[None]] = field(default=_revoked_nowhere)
    # Seconds to receive a request's whole body once the handler reads it; else 408.
    body_timeout: float = 60.0
    # The brute-force throttle and fair KDF slots of login and register.
    login_guard: LoginGuard = field(default_factory=lambda: LoginGuard.from_config(Config()))
    # Read state (issue #15): (room, user_id, seq) moves the user's cursor (forward only,
    # clamped) and tells all their WebSockets, on every node; the state of a user's rooms.
    # None: no read state (GET /api/rooms without it, PUT .../read answers 503).
    mark_read: Callable[[str, int, int], Awaitable[protocol.RoomUnread]] | None = None
    read_state: Callable[[int, Sequence[str]], Awaitable[dict[str, protocol.RoomUnread]]] | None = (
        None
    )


def create_http_app(services: HttpServices) -> QuartTrio:
    """The quart-trio app serving the HTTP API from `services`; serve it with hypercorn."""
    app = QuartTrio(__name__)
    # No automatic OPTIONS: without CORS it only answers an empty text/html 200; 405 JSON is honest.
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY, PROPAGATE_EXCEPTIONS=False, PROVIDE_AUTOMATIC_OPTIONS=False
    )
    app.config["BODY_TIMEOUT"] = services.body_timeout
    api = _Api(services)
    routes: list[tuple[str, Callable[..., Any], str]] = [
        ("/healthz", api.healthz, "GET"),
        ("/readyz", api.readyz, "GET"),
        ("/api/register", api.register, "POST"),
        ("/api/login", api.login, "POST"),
        ("/api/logout", api.logout, "POST"),
        ("/api/me", api.me, "GET"),
        ("/api/rooms", api.list_rooms, "GET"),
        ("/api/rooms", api.create_room, "POST"),
        ("/api/rooms/<room>/join", api.join, "POST"),
        ("/api/rooms/<room>/leave", api.leave, "POST"),
        ("/api/rooms/<room>/members", api.members, "GET"),
        ("/api/rooms/<room>/read", api.mark_read, "PUT"),
        ("/api/rooms/<room>/messages", api.history, "GET"),
        ("/api/rooms/<room>/messages:batch", api.import_batch, "POST"),
    ]
    if services.metrics is not None:
        routes.append(("/metrics", api.metrics, "GET"))
    for rule, view, method in routes:
        app.add_url_rule(rule, view_func=view, methods=[method])
    register_web_client(app)
    app.register_error_handler(HttpError, error_response)
    # Routing (404, 405), body limits (413) and the 500 quart makes of an unexpected exception
    # (after logging it with its traceback): all as JSON errors, with no details for a 500.
    app.register_error_handler(HTTPException, http_exception_response)
    app.after_request(_security_headers)
    return app


async def _security_headers(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"  # bodies carry tokens and private history
    return response


class _Api:
    def __init__(self, services: HttpServices) -> None:
        self._services = services
        self._store = services.store
        self._guard = services.login_guard

    # Health --------------------------------------------------------------------------------
    async def healthz(self) -> Response:
        services = self._services
        return json_response(
            {"status": "ok", "server_id": services.server_id, "bus": services.bus_status()}
        )

    async def metrics(self) -> Response:
        assert self._services.metrics is not None
        body, content_type = self._services.metrics()
        return Response(body, content_type=content_type)

    async def readyz(self) -> Response:
        reason = self._services.readiness()
        bus = self._services.bus_status()  # a degraded bus is still ready (docs/http.md)
        extra: dict[str, object] = {"bus": bus}
        if self._services.replicas is not None:  # a replica down is degraded, not unready
            extra["replicas"] = self._services.replicas()
        if reason is None:
            return json_response({"status": "ready", **extra})
        return json_response({"status": "unavailable", "reason": reason, **extra}, 503)

    # Accounts ------------------------------------------------------------------------------
    async def register(self) -> Response:
        body = decode_body(await request_body(), Registration)
        client = self._guard.client_of(request)
        async with self._guard.attempt(client, None):
            try:
                user = await self._store.create_user(body.name, body.password)
            except Conflict:
                self._guard.failed(client, None)  # probing for names that exist: like guessing
                raise HttpError(
                    409, ErrorCode.NAME_TAKEN, f"user name {body.name!r} is taken"
                ) from None
        return json_response(await self._session(user), 201)

    async def login(self) -> Response:
        body = decode_body(await request_body(), Login)
        client = self._guard.client_of(request)
        async with self._guard.attempt(client, body.name):
            user = await self._store.check_password(body.name, body.password)
        if user is None:
            self._guard.failed(client, body.name)
            self._services.auth_failed("password")
            raise HttpError(401, ErrorCode.BAD_CREDENTIALS, "wrong name or password")
        self._guard.succeeded(body.name)
        return json_response(await self._session(user))

    async def logout(self) -> Response:
        _, token = await self._authenticate()
        with trio.CancelScope(shield=True):
            await self._store.revoke_token(token)
            await self._services.token_revoked(token_hash(token))
        return empty_response(204)

    async def me(self) -> Response:
        user, _ = await self._authenticate()
        rooms = await self._store.rooms_of(user.id)
        return json_response({"user": _user_json(user), "rooms": rooms})

    # Rooms ---------------------------------------------------------------------------------
    async def list_rooms(self) -> Response:
        user, _ = await self._authenticate()
        rooms = await self._store.list_rooms()
        mine = await self._store.rooms_of(user.id)
        reads = self._services.read_state
        states = {} if reads is None else await reads(user.id, mine)
        listed = [_room_json(room, room.name in set(mine), states.get(room.name)) for room in rooms]
        return json_response({"rooms": listed})

    async def create_room(self) -> Response:
        user, _ = await self._authenticate()
        body = decode_body(await request_body(), NewRoom)
        with trio.CancelScope(shield=True):
            try:
                room = await self._store.create_room(body.name, user.id)
            except Conflict:
                raise HttpError(
                    409, ErrorCode.NAME_TAKEN, f"room name {body.name!r} is taken"
                ) from None
            await self._services.membership_changed(room.name, user.id, True)  # the creator
        return json_response(_room_json(room, True), 201)

    async def join(self, room: str) -> Response:
        user, _ = await self._authenticate()
        _check_room_name(room)
        with trio.CancelScope(shield=True):
            try:
                await self._store.join_room(room, user.id)
            except NotFound:
                raise _no_such_room(room) from None
            await self._services.membership_changed(room, user.id, True)
        return json_response({"room": room, "member": True})

    async def leave(self, room: str) -> Response:
        user, _ = await self._authenticate()
        await self._require_room(room)
        with trio.CancelScope(shield=True):
            await self._store.leave_room(room, user.id)
            await self._services.membership_changed(room, user.id, False)
        return json_response({"room": room, "member": False})

    async def members(self, room: str) -> Response:
        user, _ = await self._authenticate()
        await self._require_member(room, user)
        return json_response({"room": room, "members": await self._store.members(room)})

    async def mark_read(self, room: str) -> Response:
        user, _ = await self._authenticate()
        await self._require_member(room, user)
        body = decode_body(await request_body(), ReadCursor)
        if self._services.mark_read is None:
            raise HttpError(503, ErrorCode.UNAVAILABLE, "read state is not served here")
        with trio.CancelScope(shield=True):  # the cursor moved: its connections must hear it
            try:
                state = await self._services.mark_read(room, user.id, body.seq)
            except NotFound:
                raise _no_such_room(room) from None
        return json_response({"room": room, **_unread_json(state)})

    # Messages ------------------------------------------------------------------------------
    async def history(self, room: str) -> Response:
        user, _ = await self._authenticate()
        await self._require_member(room, user)
        before_seq, limit = history_params()
        messages, has_more = await self._store.history(room, before_seq, limit)
        # msgspec encodes each Message exactly as protocol.encode does for the `message` event.
        return json_response({"room": room, "messages": messages, "has_more": has_more})

    async def import_batch(self, room: str) -> Response:
        user, _ = await self._authenticate()
        await self._require_member(room, user)
        body = decode_body(await request_body(), BatchImport)
        max_batch = self._services.max_batch
        if len(body.messages) > max_batch:
            raise HttpError(
                413, ErrorCode.TOO_LARGE, f"{len(body.messages)} messages; at most {max_batch}"
            )
        batch = [
            NewMessage(room, user.id, user.name, self._checked_text(i, item), item.client_id)
            for i, item in enumerate(body.messages)
        ]
        with trio.CancelScope(shield=True):
            try:
                results = await self._store.append_batch(batch)
            except NotFound:
                raise _no_such_room(room) from None
            fresh = [result.message for result in results if not result.duplicate]
            if fresh:
                self._services.publish(fresh)
        return json_response(
            {
                "room": room,
                "results": [
                    {
                        "id": result.message.id,
                        "seq": result.message.seq,
                        "client_id": item.client_id,
                        "duplicate": result.duplicate,
                    }
                    for item, result in zip(body.messages, results, strict=True)
                ],
            },
            201,
        )

    def _checked_text(self, index: int, item: BatchItem) -> str:
        # The same rules as protocol.decode applies to a `send` frame.
        if not item.text.strip():
            raise HttpError(422, ErrorCode.TEXT_EMPTY, f"messages[{index}]: text is empty")
        if len(item.text) > self._services.max_text:
            raise HttpError(
                422,
                ErrorCode.TEXT_TOO_LONG,
                f"messages[{index}]: text is over {self._services.max_text} characters",
            )
        refused = protocol.refused_character(item.text)
        if refused is not None:
            raise HttpError(
                422, ErrorCode.TEXT_INVALID, f"messages[{index}]: text contains {refused}"
            )
        if item.client_id is not None and (refused := protocol.refused_character(item.client_id)):
            message = f"messages[{index}]: client_id contains {refused}"
            raise HttpError(422, ErrorCode.BAD_FIELD, message)
        return item.text

    # Shared steps --------------------------------------------------------------------------
    async def _session(self, user: User) -> dict[str, Any]:
        ttl = self._services.token_ttl
        # Taken before the store sets its own expiry, so a client never outlives its token.
        expires_at = time.time_ns() // 1_000_000 + round(ttl * 1000)
        token = await self._store.create_token(user.id, ttl)
        return {"user": _user_json(user), "token": token, "expires_at": expires_at}

    async def _authenticate(self) -> tuple[User, str]:
        """The caller's user and bearer token; `HttpError` 401 if missing, unknown or expired."""
        header = request.headers.get("Authorization")
        if header is None:
            self._services.auth_failed("token")
            raise _unauthenticated("an Authorization: Bearer token is required", None)
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
            self._services.auth_failed("token")
            raise _unauthenticated(
                "the Authorization header is not a bearer token", "invalid_request"
            )
        user = await self._store.user_for_token(token)
        if user is None:
            self._services.auth_failed("token")
            raise _unauthenticated("the token is unknown, revoked or expired", "invalid_token")
        return user, token

    async def _require_room(self, room: str) -> Room:
        _check_room_name(room)
        found = await self._store.get_room(room)
        if found is None:
            raise _no_such_room(room)
        return found

    async def _require_member(self, room: str, user: User) -> None:
        await self._require_room(room)
        if not await self._store.is_member(room, user.id):
            raise HttpError(403, ErrorCode.NOT_MEMBER, f"not a member of {room!r}")


def _check_room_name(room: str) -> None:
    if _ROOM.match(room) is None:
        raise _no_such_room(room)  # a name that cannot exist names no room


def _no_such_room(room: str) -> HttpError:
    return HttpError(404, ErrorCode.NO_SUCH_ROOM, f"no room named {room!r}")


def _unauthenticated(message: str, oauth_error: str | None) -> HttpError:
    # RFC 6750 section 3: a challenge, plus the reason when a token was sent but not accepted.
    challenge = "Bearer" if oauth_error is None else f'Bearer error="{oauth_error}"'
    return HttpError(401, ErrorCode.NOT_AUTHENTICATED, message, {"WWW-Authenticate": challenge})


def _user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "name": user.name}


def _room_json(
    room: Room, member: bool, state: protocol.RoomUnread | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": room.name, "last_seq": room.last_seq, "member": member}
    if (
        state is not None
    ):  # read after the room: its last seq is the newer one, which the count covers
        out.update(last_seq=state.last_seq, read_seq=state.read_seq, unread=state.count)
    return out


def _unread_json(state: protocol.RoomUnread) -> dict[str, Any]:
    return {"read_seq": state.read_seq, "last_seq": state.last_seq, "count": state.count}

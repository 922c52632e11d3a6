"""The HTTP API (accounts, rooms, history, batch import, health) as a quart-trio app.

The app holds no state of its own: everything comes from `HttpServices`, built once by the server.
Handlers run on the trio thread; the store does its database work on its own threads. The API is
documented in docs/http.md; errors use `protocol.ErrorCode`, like the WebSocket protocol.

Rules the handlers follow:
- authenticate first (401), then the room (404 unknown, 403 not a member), then the body (413/422);
- a write and the notification that must follow it (`publish`, `membership_changed`,
  `room_created`, `token_revoked`) run in one shielded scope, so a client that hangs up
  mid-request cannot leave a committed message unpublished, a membership change or a new room
  unannounced or a revoked token's WebSockets open.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

import protocol
from protocol import ErrorCode, Message
from server.chat.room_control import RoomControl
from server.config import Config
from server.http import read_state as reads
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
    Login,
    Registration,
    check_room_name,
    checked_batch_text,
    device_of,
    history_params,
    no_such_room,
    request_body,
)
from server.http._sessions import SessionRoutes
from server.http.login_guard import LoginGuard
from server.http.message_changes import Submit, change_response
from server.http.rooms import RoomRoutes, check_batch
from server.http.search import register_search
from server.http.web_client import register_web_client
from storage import PRIVATE, Conflict, NewMessage, NotFound, Room, Store, User
from storage.passwords import token_hash

MiB = 1024 * 1024
MAX_BODY = 1 * MiB
MAX_TOKEN_LENGTH = 256  # longer than any token we issue; refused before a store lookup


async def _revoked_nowhere(token_hash: str) -> None:
    pass


def _seen_nowhere(user_id: int, token_hash: str) -> None:
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
    # Sync, (room, creator's user id) once a room is created: every other connected user is told
    # (`room_created`, on every node).
    room_created: Callable[[str, int], None] = lambda room, creator: None
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
    # Read state (server/http/read_state.py); None: GET /api/rooms without it, PUT .../read 503.
    mark_read: reads.MarkRead | None = None
    read_state: reads.ReadStates | None = None
    # Queues an edit or delete on the message writer (PATCH/DELETE of a message); None: 503.
    submit: Submit | None = None
    # Sync, told (user id, token hash) of each authenticated request: the session's last use
    # and the user's last_seen (server/chat/activity.py keeps it from writing per request).
    seen: Callable[[int, str], None] = _seen_nowhere
    # Room settings, roles and bans (issue #15); None: those routes answer 503.
    rooms: RoomControl | None = None


def create_http_app(services: HttpServices) -> QuartTrio:
    """The quart-trio app serving the HTTP API from `services`; serve it with hypercorn."""
    app = QuartTrio(__name__)
    # No automatic OPTIONS: without CORS it only answers an empty text/html 200; 405 JSON is honest.
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY, PROPAGATE_EXCEPTIONS=False, PROVIDE_AUTOMATIC_OPTIONS=False
    )
    app.config["BODY_TIMEOUT"] = services.body_timeout
    api = _Api(services)
    mine = SessionRoutes(
        services.store, api.authenticate, services.login_guard, services.token_revoked
    )
    rooms = RoomRoutes(
        services.store,
        api.authenticate,
        lambda: services.rooms,
        services.membership_changed,
        services.room_created,
        services.read_state,
    )
    routes: list[tuple[str, Callable[..., Any], str]] = [
        ("/healthz", api.healthz, "GET"),
        ("/readyz", api.readyz, "GET"),
        ("/api/register", api.register, "POST"),
        ("/api/login", api.login, "POST"),
        ("/api/logout", api.logout, "POST"),
        ("/api/me", mine.me, "GET"),
        ("/api/me", mine.update_me, "PATCH"),
        ("/api/users/<name>", mine.user, "GET"),
        ("/api/sessions", mine.sessions, "GET"),
        ("/api/sessions", mine.revoke_many, "DELETE"),
        ("/api/sessions/<session_id>", mine.revoke_one, "DELETE"),
        ("/api/password", mine.change_password, "POST"),
        ("/api/rooms", rooms.list_rooms, "GET"),
        ("/api/rooms", rooms.create_room, "POST"),
        ("/api/rooms/<room>", rooms.room, "GET"),
        ("/api/rooms/<room>", rooms.update, "PATCH"),
        ("/api/rooms/<room>/join", rooms.join, "POST"),
        ("/api/rooms/<room>/leave", rooms.leave, "POST"),
        ("/api/rooms/<room>/members", rooms.members, "GET"),
        ("/api/rooms/<room>/members/<name>", rooms.set_role, "PUT"),
        ("/api/rooms/<room>/<any(invite,kick,ban,unban,transfer):action>", rooms.member, "POST"),
        ("/api/rooms/<room>/read", api.mark_read, "PUT"),
        ("/api/rooms/<room>/messages", api.history, "GET"),
        ("/api/rooms/<room>/messages:batch", api.import_batch, "POST"),
        ("/api/rooms/<room>/messages/<int:message_id>", api.change_message, "PATCH"),
        ("/api/rooms/<room>/messages/<int:message_id>", api.change_message, "DELETE"),
    ]
    if services.metrics is not None:
        routes.append(("/metrics", api.metrics, "GET"))
    for rule, view, method in routes:
        app.add_url_rule(rule, view_func=view, methods=[method])
    register_search(app, services.store, api.authenticate)
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
        return json_response(await self._session(user, device_of(body.device)), 201)

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
        return json_response(await self._session(user, device_of(body.device)))

    async def logout(self) -> Response:
        _, token = await self._authenticate()
        with trio.CancelScope(shield=True):
            await self._store.revoke_token(token)
            await self._services.token_revoked(token_hash(token))
        return empty_response(204)

    # Rooms (creating, listing, joining, settings, members: server/http/rooms.py) ----------
    async def mark_read(self, room: str) -> Response:
        user, _ = await self._authenticate()
        await self._require_member(room, user)
        body = await request_body()
        return await reads.mark_read_response(self._services.mark_read, room, user.id, body)

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
        await check_batch(self._store, await self._require_member(room, user), user.id)
        body = decode_body(await request_body(), BatchImport)
        max_batch = self._services.max_batch
        if len(body.messages) > max_batch:
            raise HttpError(
                413, ErrorCode.TOO_LARGE, f"{len(body.messages)} messages; at most {max_batch}"
            )
        batch = [
            NewMessage(
                room,
                user.id,
                user.name,
                checked_batch_text(i, item, self._services.max_text),
                item.client_id,
            )
            for i, item in enumerate(body.messages)
        ]
        with trio.CancelScope(shield=True):
            try:
                results = await self._store.append_batch(batch)
            except NotFound:
                raise no_such_room(room) from None
            fresh = [r.message for r in results if not r.duplicate and type(r.message) is Message]
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

    async def change_message(self, room: str, message_id: int) -> Response:
        """PATCH (edit) or DELETE of a message: server.http.message_changes."""
        user, _ = await self._authenticate()
        await self._require_member(room, user)
        if (submit := self._services.submit) is None:
            raise HttpError(503, ErrorCode.UNAVAILABLE, "this server does not take edits")
        target, body = (room, message_id), await request_body()
        return await change_response(
            self._store, submit, user, target, body, self._services.max_text
        )

    # Shared steps --------------------------------------------------------------------------
    async def _session(self, user: User, device: str) -> dict[str, Any]:
        ttl = self._services.token_ttl
        # Taken before the store sets its own expiry, so a client never outlives its token.
        expires_at = time.time_ns() // 1_000_000 + round(ttl * 1000)
        token = await self._store.create_token(user.id, ttl, device)
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
        self._services.seen(user.id, token_hash(token))
        return user, token

    authenticate = _authenticate  # for the routes of other modules (server/http/_sessions.py)

    async def _require_room(self, room: str) -> Room:
        check_room_name(room)
        found = await self._store.get_room(room)
        if found is None:
            raise no_such_room(room)
        return found

    async def _require_member(self, room: str, user: User) -> Room:
        found = await self._require_room(room)
        if not await self._store.is_member(room, user.id):
            if found.visibility == PRIVATE:  # to a non-member, as if it did not exist
                raise no_such_room(room)
            raise HttpError(403, ErrorCode.NOT_MEMBER, f"not a member of {room!r}")
        return found


def _unauthenticated(message: str, oauth_error: str | None) -> HttpError:
    # RFC 6750 section 3: a challenge, plus the reason when a token was sent but not accepted.
    challenge = "Bearer" if oauth_error is None else f'Bearer error="{oauth_error}"'
    return HttpError(401, ErrorCode.NOT_AUTHENTICATED, message, {"WWW-Authenticate": challenge})


def _user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "name": user.name}

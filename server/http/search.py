"""`GET /api/search?q=...&room=...&before=...&limit=...` (issue #15, docs/http.md): the
WebSocket `search` request's rules (server/chat/search.py), its refusals as HTTP errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from quart import Response, request
from quart_trio import QuartTrio

from protocol import DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT, ErrorCode, ProtocolError
from server.chat.search import search
from server.http._json import HttpError, json_response
from server.http._requests import check_room_name, int_param
from storage import Store, User

Authenticate = Callable[[], Awaitable[tuple[User, str]]]
_PARAMS = frozenset({"q", "room", "before", "limit"})
_STATUS = {ErrorCode.NO_SUCH_ROOM: 404, ErrorCode.NOT_MEMBER: 403}  # every other refusal: 422


def register_search(app: QuartTrio, store: Store, authenticate: Authenticate) -> None:
    """Serve `GET /api/search` from `store`, for the user `authenticate` finds (else 401)."""

    async def search_view() -> Response:
        user, _ = await authenticate()
        unknown = set(request.args) - _PARAMS
        if unknown:
            name = sorted(unknown)[0]
            raise HttpError(422, ErrorCode.UNKNOWN_FIELD, f"unknown query parameter `{name}`")
        query = request.args.get("q")
        if query is None:
            raise HttpError(422, ErrorCode.MISSING_FIELD, "missing query parameter `q`")
        room = request.args.get("room")
        if room is not None:
            check_room_name(room)
        limit = int_param("limit", 1, MAX_SEARCH_LIMIT)
        before = request.args.get("before")
        try:
            page = await search(
                store,
                user.id,
                query,
                room=room,
                before=before,
                limit=DEFAULT_SEARCH_LIMIT if limit is None else limit,
            )
        except ProtocolError as exc:
            raise HttpError(_STATUS.get(exc.code, 422), exc.code, exc.message) from None
        return json_response({"results": page.results, "next": page.next})

    app.add_url_rule("/api/search", view_func=search_view, methods=["GET"])

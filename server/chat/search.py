"""Search (issue #15), one set of rules for the WebSocket `search` request and
`GET /api/search` (docs/protocol.md, "Search").

Rules:
- Only rooms the user is a member of when the query runs: the store's membership (the catalog),
  not a cache, so a room just left is never searched. With `room`, the user must be a member of
  it (`not_member`; `no_such_room` for a room that does not exist, as join answers, and for a
  private room the user is not in: non-members learn nothing of it).
- The query is words (`protocol.query_words`): `query_empty`, `query_too_long`; the cursor is
  opaque (`protocol.decode_search_cursor`: `bad_field`).
- Newest first by message id (ids rise in commit order on every backend, across shards too); the
  cursor is the last result's id, so a page never repeats a result of an earlier one, and
  messages sent meanwhile (larger ids) never push results from one page onto the next.
"""

from __future__ import annotations

from protocol import (
    DEFAULT_SEARCH_LIMIT,
    MAX_SEARCH_LIMIT,
    ErrorCode,
    ProtocolError,
    SearchResults,
    decode_search_cursor,
    encode_search_cursor,
    query_words,
)
from storage import PRIVATE, Store
from storage.search import NO_CURSOR


async def search(
    store: Store,
    user_id: int,
    query: str,
    *,
    room: str | None = None,
    before: str | None = None,
    limit: int = DEFAULT_SEARCH_LIMIT,
    ref: str | None = None,
) -> SearchResults:
    """One page of results for the user, or the `ProtocolError` that refuses the request."""
    words = query_words(query, ref)
    before_id = NO_CURSOR if before is None else decode_search_cursor(before, ref)
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"`limit` must be in 1..{MAX_SEARCH_LIMIT}", ref)
    if room is None:
        rooms = await store.rooms_of(user_id)
    elif await store.is_member(room, user_id):
        rooms = [room]
    elif (found_room := await store.get_room(room)) is None or found_room.visibility == PRIVATE:
        # A private room is answered to a non-member exactly as a room that does not exist.
        raise ProtocolError(ErrorCode.NO_SUCH_ROOM, f"no room {room}", ref)
    else:
        raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of {room}", ref)
    found, more = await store.search(rooms, words, before_id, limit)
    after = encode_search_cursor(found[-1].id) if more and found else None
    return SearchResults(query=query, results=found, next=after, ref=ref)

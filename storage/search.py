"""The store's search call (issue #15): full-text search over a set of rooms' messages.

The server decides which rooms (those the user is a member of at query time: the catalog's
answer) and turns the query into words (`protocol.query_words`); a backend only matches words
against the current text of each room's messages. PostgreSQL keeps its index (a GIN expression
index) in the transaction of each append, edit and delete; SQLite indexes committed rows in
batches, off the commit path (storage/sqlite/_search.py), and a search first indexes what is
pending: on both, a search finds what was committed before it began, by its current text.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Sequence
from typing import Protocol

from protocol import Message

NO_CURSOR = 2**63 - 1
"""`before_id` of a first page: larger than any message id."""


class MessageSearch(Protocol):
    """The messages' part: searched where the rooms' messages are (each shard for its rooms)."""

    async def search(
        self, rooms: Collection[str], words: Sequence[str], before_id: int, limit: int
    ) -> tuple[list[Message], bool]:
        """Up to `limit` messages of `rooms` with id < `before_id`, newest (largest id) first,
        whose current text holds every one of `words` (case and, on SQLite, accents ignored),
        the last word as a prefix; and whether more such messages exist. `words` are the
        non-empty letter-and-digit runs `protocol.query_words` gives, never query syntax.

        Only messages (kind 0) that are not deleted: an edited message by its current text,
        never by an old one; edit and delete entries never. Unknown rooms are skipped."""

    async def index_search(self) -> int:
        """Bring the index up to date with what is committed, when the backend indexes off
        the commit path (the server calls it periodically, to bound the backlog a search
        would index first); how many ids the index moved past (0 where indexing is part of
        every commit)."""


def newest_first(pages: Iterable[Sequence[Message]], limit: int) -> tuple[list[Message], bool]:
    """Pages of `search` from several databases (each newest first, each asked for `limit` + 1)
    merged into one: the `limit` newest, and whether any is left. Ids are global, so the
    merged order is the order one database would give, and a cursor (the last id) stays
    correct for every part."""
    merged = list(heapq.merge(*pages, key=lambda m: -m.id))
    return merged[:limit], len(merged) > limit

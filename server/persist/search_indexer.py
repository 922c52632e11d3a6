"""The search indexer: brings the store's full-text index up to date every `interval` seconds.

SQLite indexes committed messages in batches off the commit path (storage/sqlite/_search.py);
a search indexes what is pending first, so this task does not decide what a search finds. It
bounds the backlog: what a search must index before it reads is at most `interval` seconds of
messages. On PostgreSQL the call returns at once (its index is part of every commit).
"""

from __future__ import annotations

import logging

import trio

from storage import StorageError
from storage.search import MessageSearch

_log = logging.getLogger(__name__)

# Seconds. Each round is a write transaction of its own (and an FTS5 segment): at light load a
# round per message would cost about what indexing in the commit did, so rounds are rare.
SEARCH_INDEX_INTERVAL = 10.0


async def run_search_indexer(
    store: MessageSearch,
    interval: float = SEARCH_INDEX_INTERVAL,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Index every `interval` seconds until cancelled. A failed round (the database locked
    past its busy timeout by another process, or away) is logged; the next one retries."""
    task_status.started()
    while True:
        await trio.sleep(interval)
        try:
            await store.index_search()
        except StorageError as exc:
            _log.warning("search indexing failed, retried in %g s: %s", interval, exc)

"""Search over sharded messages (issue #15): each shard database holding some of the user's
rooms is searched, the pages merged by message id (ids are global), so a keyset cursor pages
through all shards at once without a repeat or a gap; a room pinned to another database is
found there (its rows, copied, are indexed by the target's GIN index)."""

from __future__ import annotations

from functools import partial

import trio

from protocol import query_words
from server.cli import main
from storage import NewMessage, open_store
from storage.postgres import target_of
from storage.routing.sharded_store import ShardedStore
from storage.search import NO_CURSOR
from tests.postgres import LentDatabases

from .conftest import rooms_on


async def test_search_merges_the_shards_pages_newest_first_and_pages_across_them(
    databases: LentDatabases,
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(3)]
    rooms = [names[0] for names in rooms_on(3, 1, "s")]  # one room on each database
    async with open_store(catalog, scrypt_n=2**10, shards=shards, pool_size=2) as store:
        alice = await store.create_user("alice", "pw")
        for room in rooms:
            await store.create_room(room, alice.id)
        sent = []
        for i in range(9):  # one message per batch: ids rise across the shards in send order
            batch = [NewMessage(rooms[i % 3], alice.id, "alice", f"alert number {i}", None)]
            sent += [r.message.id for r in await store.append_batch(batch)]
        pages, before = [], NO_CURSOR
        while True:
            found, more = await store.search(rooms, query_words("alert"), before, 4)
            pages.append([m.id for m in found])
            if not more:
                break
            before = found[-1].id
        assert pages == [sent[:4:-1], sent[4:0:-1], sent[:1]]
        found, _ = await store.search(rooms[1:2], query_words("number"), NO_CURSOR, 50)
        assert [m.id for m in found] == sent[7::-3][:3]
        assert {m.room for m in found} == {rooms[1]}

        assert isinstance(store, ShardedStore)
        flags = ["--db", catalog, *[arg for url in shards for arg in ("--db-shard", url)]]
        target = next(
            url
            for url in shards
            if target_of(url) != store.sharded.directory.place(rooms[0]).target
        )
        argv = ["shards", "pin", rooms[0], "--to", target, *flags]
        assert await trio.to_thread.run_sync(partial(main, argv)) == 0
        found, _ = await store.search(rooms[:1], query_words("alert"), NO_CURSOR, 50)
        assert [m.id for m in found] == sent[6::-3]

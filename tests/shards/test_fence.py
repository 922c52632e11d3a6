"""The hold and the switch, step by step: a writer of a unit whose `shard_owned` row is locked
waits (not refused); once the row is gone it keeps waiting until the directory names the new
home, then commits there with the next seq. Reads follow the same way."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
import trio

from storage import Appended, NewMessage, StorageError, open_store
from storage.postgres import Connection, PostgresStore, target_of
from storage.routing import (
    SHARD_LOCK_KEY,
    SHARD_MIGRATIONS,
    SHARD_VERSION_TABLE,
    apply_shard_schema,
    directory,
    move,
)
from storage.routing._shard_jobs import own
from storage.routing.sharded import ShardedMessageStore
from storage.routing.sharded_store import ShardedStore
from storage.routing.shards import logical_shard
from tests.conftest import STEP
from tests.postgres import LentDatabases

from .conftest import rooms_on


def _waiting_writers(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def _until(check: Callable[[], bool]) -> None:
    """Wait for a condition no event announces (PostgreSQL does not tell when a backend starts
    waiting on a row lock): checked every 10 ms, for at most STEP seconds."""
    for _ in range(int(STEP / 0.01)):
        if await trio.to_thread.run_sync(check):
            return
        await trio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_a_writer_waits_through_the_hold_and_the_switch_then_commits_on_the_new_home(
    databases: LentDatabases,
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    room = rooms_on(2, 1, "held")[0][0]
    shard = logical_shard(room)
    unit = directory.unit_of_logical(shard)
    store = open_store(catalog, scrypt_n=2**10, shards=shards)
    async with store:
        assert isinstance(store, ShardedStore)
        alice = await store.create_user("alice", "pw")
        await store.create_room(room, alice.id)
        await store.append_batch(
            [NewMessage(room, alice.id, "alice", f"m{i}", None) for i in range(3)]
        )
        done: list[Appended] = []

        async def write() -> None:
            done.extend(
                await store.append_batch([NewMessage(room, alice.id, "alice", "held", "h")])
            )

        with psycopg.connect(shards[0]) as src, psycopg.connect(shards[1]) as dst:
            async with trio.open_nursery() as nursery:
                src.execute("SELECT unit FROM shard_owned WHERE unit = %s FOR UPDATE", (unit,))
                nursery.start_soon(write)
                await _until(lambda: _waiting_writers(shards[0]) == 1)
                assert not done  # held: waiting on the row lock, not refused
                await trio.to_thread.run_sync(_copy_and_fence, src, dst, shard, unit)
                await _until(lambda: store.sharded.refreshes >= 2)  # turned away, re-reading
                assert not done  # nobody serves the unit yet: still waiting
                await trio.to_thread.run_sync(_switch, dst, catalog, unit, shards[1])
        assert [(a.message.seq, a.duplicate) for a in done] == [(4, False)]
        page, _ = await store.history(room, None, 10)
        assert [m.text for m in page] == ["m0", "m1", "m2", "held"]
        assert store.sharded.directory.place(room).target == target_of(shards[1])


def _copy_and_fence(
    src: Connection,
    dst: Connection,
    shard: int,
    unit: str,
) -> None:
    """What a move does under its hold (src's transaction holds the row lock): copy, fence."""
    rooms = src.execute("SELECT room_id, name, last_seq FROM shard_rooms").fetchall()
    dst.autocommit = True
    apply_shard_schema(dst, SHARD_VERSION_TABLE, SHARD_MIGRATIONS, SHARD_LOCK_KEY)
    ranges = {int(r[0]): (0, int(r[2])) for r in rooms}
    move._copy(src, dst, shard, rooms, ranges)
    src.execute("DELETE FROM shard_owned WHERE unit = %s", (unit,))
    src.commit()


def _switch(dst: Connection, catalog: str, unit: str, to: str) -> None:
    own(dst, [unit])
    with psycopg.connect(catalog, autocommit=True) as cat:
        directory.switch(cat, unit, target_of(to))


async def test_a_unit_nobody_serves_fails_sends_and_reads_with_a_storage_error_in_time(
    databases: LentDatabases,
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    room = rooms_on(2, 1, "orphan")[0][0]
    sharded = ShardedMessageStore(catalog, shards, switch_timeout=0.3)
    async with ShardedStore(PostgresStore(catalog), sharded, scrypt_n=2**10) as store:
        alice = await store.create_user("alice", "pw")
        await store.create_room(room, alice.id)
        await store.append_batch([NewMessage(room, alice.id, "alice", "kept", None)])
        with psycopg.connect(shards[0], autocommit=True) as conn:  # a move stopped past its fence
            unit = directory.unit_of_logical(logical_shard(room))
            conn.execute("DELETE FROM shard_owned WHERE unit = %s", (unit,))
        with trio.fail_after(STEP):
            with pytest.raises(StorageError, match="unfinished"):
                await store.append_batch([NewMessage(room, alice.id, "alice", "lost", None)])
            with pytest.raises(StorageError, match="unfinished"):
                await store.history(room, None, 10)
        assert sharded.refreshes >= 2


async def test_calls_after_aclose_fail_with_a_storage_error(databases: LentDatabases) -> None:
    catalog, shards = databases.url("catalog"), [databases.url("shard0")]
    store = open_store(catalog, scrypt_n=2**10, shards=shards)
    async with store:
        alice = await store.create_user("alice", "pw")
        await store.create_room("lobby", alice.id)
    await store.aclose()  # again: nothing happens
    with pytest.raises(StorageError):
        await store.history("lobby", None, 10)
    with pytest.raises(StorageError):
        await store.append_batch([NewMessage("lobby", alice.id, "alice", "late", None)])

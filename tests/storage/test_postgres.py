"""What only the PostgreSQL backend does (the shared contract is test_storage.py): several
stores on one database as several hosts would be, schema versions, the probe, and the time
bounds on queries. Real PostgreSQL (tests/postgres.py), no mocks."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import psycopg
import pytest
import trio
import trio.testing

from storage import Appended, NewMessage, StorageError, Store, User, open_store
from storage.postgres import MIGRATIONS

from ..postgres import PostgresUrl

SCRYPT_N = 2**10
ROOMS = ["a", "b", "c", "d", "e"]


def msg(room: str, user: User, text: str, client_id: str | None = None) -> NewMessage:
    return NewMessage(room, user.id, user.name, text, client_id)


@asynccontextmanager
async def stores(url: str, count: int, **options: object) -> AsyncIterator[list[Store]]:
    """`count` opened stores on one database: what `count` hosts would hold."""
    async with AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(open_store(url, scrypt_n=SCRYPT_N, **options))  # type: ignore[arg-type]
            for _ in range(count)
        ]
        yield opened


def sql(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True)


async def _setup(store: Store) -> list[User]:
    users = [await store.create_user(f"u{i}", "pw") for i in range(3)]
    for room in ROOMS:
        await store.create_room(room, users[0].id)
    return users


def _assert_gap_free_and_unique(results: list[Appended], url: str) -> None:
    for room in ROOMS:
        got = sorted(r.message.seq for r in results if r.message.room == room)
        assert got == list(range(1, len(got) + 1)), room
    assert len({r.message.id for r in results}) == len(results)
    with sql(url) as conn:
        rows = conn.execute(
            "SELECT r.name, r.last_seq, count(m.id), coalesce(max(m.seq), 0)"
            " FROM rooms r LEFT JOIN messages m ON m.room_id = r.id GROUP BY r.name, r.last_seq"
        ).fetchall()
    stored = {name: (last, count, top) for name, last, count, top in rows}
    for room in ROOMS:
        expected = sum(1 for r in results if r.message.room == room)
        assert stored[room] == (expected, expected, expected), room


async def test_two_stores_appending_to_the_same_rooms_at_once_number_them_gap_free(
    postgres_url: PostgresUrl,
) -> None:
    url = postgres_url("shared")
    results: list[Appended] = []
    with trio.fail_after(60):
        async with stores(url, 2, pool_size=4) as (one, two):
            users = await _setup(one)

            async def writer(store: Store, n: int) -> None:
                for k in range(15):
                    batch = [
                        msg(ROOMS[(n + k + i) % 2], users[i % 3], f"{n}-{k}-{i}", f"{n}-{k}-{i}")
                        for i in range(4)
                    ]
                    results.extend(await store.append_batch(batch))

            async with trio.open_nursery() as nursery:
                for n in range(8):
                    nursery.start_soon(writer, (one, two)[n % 2], n)
    assert len(results) == 8 * 15 * 4 and not any(r.duplicate for r in results)
    _assert_gap_free_and_unique(results, url)


async def test_batches_naming_rooms_in_different_orders_never_deadlock(
    postgres_url: PostgresUrl,
) -> None:
    """Each batch names all five rooms in its own random order; a store that locked them in
    that order would deadlock (PostgreSQL then aborts one: a StorageError here)."""
    url = postgres_url("orders")
    rng = random.Random(12)
    results: list[Appended] = []
    with trio.fail_after(90):
        async with stores(url, 2, pool_size=5) as (one, two):
            users = await _setup(one)

            async def writer(store: Store, n: int) -> None:
                for k in range(12):
                    order = rng.sample(ROOMS, len(ROOMS))
                    batch = [msg(room, users[n % 3], f"{n}-{k}-{room}") for room in order]
                    results.extend(await store.append_batch(batch))

            async with trio.open_nursery() as nursery:
                for n in range(10):
                    nursery.start_soon(writer, (one, two)[n % 2], n)
    assert len(results) == 10 * 12 * len(ROOMS)
    _assert_gap_free_and_unique(results, url)


async def test_a_client_id_sent_through_two_stores_at_once_is_stored_once(
    postgres_url: PostgresUrl,
) -> None:
    url = postgres_url("dedupe")
    async with stores(url, 2) as (one, two):
        users = await _setup(one)
        results: list[Appended] = []

        async def send(store: Store, k: int) -> None:
            batch = [msg("a", users[1], f"hello {k}", f"id-{k}")]
            results.extend(await store.append_batch(batch))

        for k in range(10):
            results.clear()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, one, k)
                nursery.start_soon(send, two, k)
            assert sorted(r.duplicate for r in results) == [False, True]
            assert results[0].message == results[1].message
            assert results[0].message.seq == k + 1
        assert await one.last_seq("a") == 10


async def test_stores_opening_at_once_apply_the_schema_once(postgres_url: PostgresUrl) -> None:
    url = postgres_url("fresh")
    with trio.fail_after(60):
        async with stores(url, 4, pool_size=1) as opened:
            alice = await opened[0].create_user("alice", "pw")
            assert await opened[3].check_password("alice", "pw") == alice
    with sql(url) as conn:
        assert conn.execute("SELECT version FROM hibiki_schema").fetchall() == [(len(MIGRATIONS),)]


async def test_a_database_migrated_by_a_newer_hibiki_is_refused_untouched(
    postgres_url: PostgresUrl,
) -> None:
    url = postgres_url("newer")
    async with stores(url, 1):
        pass
    with sql(url) as conn:
        conn.execute("UPDATE hibiki_schema SET version = 99")
    store = open_store(url, scrypt_n=SCRYPT_N)
    with pytest.raises(
        StorageError, match=f"schema is version 99, newer than this hibiki.s {len(MIGRATIONS)}"
    ):
        await store.open()
    with sql(url) as conn:
        assert conn.execute("SELECT version FROM hibiki_schema").fetchall() == [(99,)]


async def test_probe_commits_on_the_primary_and_reports_a_read_only_database(
    postgres_url: PostgresUrl,
) -> None:
    url = postgres_url("probe")
    async with stores(url, 1) as (store,):
        assert await store.probe(2.0) is None
        dbname = url.rsplit("/", 1)[1]
        with sql(url) as conn:  # what a hot standby would say to a write
            conn.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
        problem = await store.probe(2.0)
        assert problem is not None and "read-only transaction" in problem
    gone = open_store(url.rsplit("/", 1)[0] + "/no_such_database_here")
    problem = await gone.probe(2.0)
    assert problem is not None and "no_such_database_here" in problem


@asynccontextmanager
async def _room_locked(url: str, room: str) -> AsyncIterator[None]:
    """Holds the room's row lock from another connection, as a slow writer would."""
    conn = await trio.to_thread.run_sync(sql, url)
    try:
        await trio.to_thread.run_sync(conn.execute, "BEGIN")
        query = f"SELECT 1 FROM rooms WHERE name = '{room}' FOR UPDATE"
        await trio.to_thread.run_sync(conn.execute, query)
        yield
    finally:
        await trio.to_thread.run_sync(conn.close)  # rolls back: the lock is released


async def _until_waiting_on_a_lock(url: str, count: int = 1) -> None:
    """Until `count` other sessions wait on a lock: the store's query has reached the server."""
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with sql(url) as conn:
        # Polling the server's state: no event says that another session began to wait.
        for _ in range(3000):
            if conn.execute(query).fetchone() == (count,):
                return
            await trio.sleep(0.01)
    raise AssertionError(f"{count} sessions never waited on a lock")


async def test_statement_timeout_ends_a_query_stuck_on_a_lock(postgres_url: PostgresUrl) -> None:
    url = postgres_url("timeout")
    async with stores(url, 1, statement_timeout=0.3) as (store,):
        users = await _setup(store)
        with trio.fail_after(30):
            async with _room_locked(url, "a"):
                with pytest.raises(StorageError, match="statement_timeout"):
                    await store.append_batch([msg("a", users[0], "stuck")])
        results = await store.append_batch([msg("a", users[0], "after")])
        assert [r.message.seq for r in results] == [1]


async def test_a_cancelled_append_waits_for_its_commit(postgres_url: PostgresUrl) -> None:
    url = postgres_url("cancel-write")
    async with stores(url, 1) as (store,):
        users = await _setup(store)
        cancelled = trio.CancelScope()
        done = trio.Event()

        async def append() -> None:
            with cancelled:
                await store.append_batch([msg("a", users[0], "whole", "w1")])
            done.set()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                async with _room_locked(url, "a"):
                    nursery.start_soon(append)
                    await _until_waiting_on_a_lock(url)
                    cancelled.cancel()
                    await trio.testing.wait_all_tasks_blocked()
                    assert not done.is_set()  # still waiting for its transaction
                await done.wait()  # the lock is gone: the batch commits, then the task ends
        page, _ = await store.history("a", None, 10)
        assert [(m.seq, m.text) for m in page] == [(1, "whole")]


async def test_a_cancelled_read_is_abandoned_and_statement_timeout_ends_its_query(
    postgres_url: PostgresUrl,
) -> None:
    url = postgres_url("cancel-read")
    async with stores(url, 1, statement_timeout=1.0) as (store,):
        users = await _setup(store)
        stored = await store.append_batch([msg("a", users[0], "kept")])
        cancelled = trio.CancelScope()
        done = trio.Event()

        async def read() -> None:
            with cancelled:
                await store.history("a", None, 10)
            done.set()

        conn = sql(url)
        try:
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")  # every read waits
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    await _until_waiting_on_a_lock(url)
                    cancelled.cancel()
                    await done.wait()  # while the lock is still held: the read was abandoned
                assert cancelled.cancelled_caught
                await _until_waiting_on_a_lock(url, 0)  # its query, ended by the server
        finally:
            conn.close()
        assert await store.history("a", None, 10) == ([stored[0].message], False)

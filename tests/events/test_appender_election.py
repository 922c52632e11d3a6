"""One elected appender per database (issue #13): the leases on both backends, two appenders
with stores of their own on one database (each event appended once, one leader), a follower
taking over when the leader goes, and the watermark that keeps the cursor below PostgreSQL ids
still in flight. Real Redis (a namespace of the test's own), real SQLite files, real
PostgreSQL databases (tests/postgres.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import coredis
import psycopg
import pytest
import trio

from server.events import EventAppender, stream_key
from server.events._watermark import Gap, StreamWatermark
from server.persist.writer import MessageWriter, PendingSend
from storage import CompositeStore, NewMessage, open_store

from ..postgres import TestDatabases

STEP = 10.0
URL = "redis://127.0.0.1:6379/0"
PARTITIONS = 2
ELECTION = 0.2  # seconds: the tests' election interval


class _NoBus:
    def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        pass


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "h.db")
        return
    databases = TestDatabases()  # skips (or fails under CI=true) without PostgreSQL
    try:
        yield databases.url("events")
    finally:
        databases.drop_all()


@asynccontextmanager
async def _opened(url: str) -> AsyncIterator[CompositeStore]:
    store = open_store(url, scrypt_n=2)
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


def _appender(store: CompositeStore, namespace: str) -> EventAppender:
    return EventAppender(
        URL,
        store.events,
        namespace=namespace,
        partitions=PARTITIONS,
        maxlen=10_000,
        append_timeout=2.0,
        election_interval=ELECTION,
        poll_interval=0.02,
    )


async def _commit(
    store: CompositeStore,
    sink: EventAppender,
    user: int,
    tag: str,
    n: int,
    rooms: tuple[str, ...] = ("r0", "r1", "r2"),
) -> None:
    writer = MessageWriter(store, _NoBus(), queue_size=100, max_batch=10, after_commit=[sink])
    sends = [
        PendingSend(
            NewMessage(rooms[i % len(rooms)], user, "ann", f"{tag}{i}", f"{tag}{i}"), None, None
        )
        for i in range(n)
    ]
    for start in range(0, n, 5):
        await writer.commit_batch(sends[start : start + 5])


async def _entries(client: coredis.Redis[bytes], namespace: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for p in range(PARTITIONS):
        for entry in await client.xrange(stream_key(namespace, p)):
            out.append((entry.field_values[b"room"].decode(), int(entry.field_values[b"seq"])))
    return out


async def _until_appended(client: coredis.Redis[bytes], namespace: str, want: int) -> None:
    with trio.fail_after(STEP):
        while len(set(await _entries(client, namespace))) < want:  # noqa: ASYNC110 (Redis's state)
            await trio.sleep(0.02)


def test_the_watermark_waits_for_ids_in_flight_and_forgets_rolled_back_ones() -> None:
    mark = StreamWatermark(10)
    mark.observe([11, 14, 15], (100, 105))  # 12, 13 taken by transactions below 105
    assert (mark.settled, mark.high, mark.gaps) == (11, 15, [Gap(12, 13, 105)])
    assert mark.gap_ranges() == [(12, 13)]
    mark.observe([13, 16], (103, 107))  # 13 committed; 12's writer may still run
    assert (mark.settled, mark.high, mark.gaps) == (11, 16, [Gap(12, 12, 105)])
    mark.observe([], (105, 107))  # every transaction below 105 is over: 12 never comes
    assert (mark.settled, mark.high, mark.gaps) == (16, 16, [])
    sqlite = StreamWatermark(0)
    sqlite.observe([1, 3], None)  # ids visible in id order: 2 is gone for good
    assert (sqlite.settled, sqlite.gaps) == (3, [])


async def test_one_lease_per_database_until_it_is_released(database: str) -> None:
    async with _opened(database) as one, _opened(database) as two:
        first, second = one.events.appender_lease(), two.events.appender_lease()
        assert first.acquire() and first.held()
        assert not second.acquire() and not second.held()
        assert first.acquire()  # held already: still ours
        first.release()
        assert not first.held()
        assert second.acquire() and second.held()
        assert not first.acquire()
        second.release()


async def test_two_appenders_on_one_database_append_each_event_once_from_one_leader(
    database: str, redis: tuple[coredis.Redis[bytes], str]
) -> None:
    client, namespace = redis
    async with _opened(database) as one, _opened(database) as two:
        user = (await one.create_user("ann", "pw-pw-pw-pw")).id
        for room in ("r0", "r1", "r2"):
            await one.create_room(room, user)
        a, b = _appender(one, namespace), _appender(two, namespace)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            assert (a.leader, b.leader) == (True, False)
            async with trio.open_nursery() as writers:  # both processes commit at once
                writers.start_soon(_commit, one, a, user, "a", 30)
                writers.start_soon(_commit, two, b, user, "b", 30)
            await _until_appended(client, namespace, 60)
            nursery.cancel_scope.cancel()
        entries = await _entries(client, namespace)
        assert len(entries) == len(set(entries)) == 60  # once each, with no failure
        assert (a.appended, b.appended, b.outbox_depth) == (60, 0, 0)
        for room in ("r0", "r1", "r2"):
            assert [s for r, s in entries if r == room] == list(range(1, 21))


async def test_a_follower_takes_over_within_the_election_interval_when_the_leader_goes(
    database: str, redis: tuple[coredis.Redis[bytes], str]
) -> None:
    client, namespace = redis
    async with _opened(database) as one, _opened(database) as two:
        user = (await one.create_user("ann", "pw-pw-pw-pw")).id
        for room in ("r0", "r1", "r2"):
            await one.create_room(room, user)
        follower = _appender(two, namespace)
        async with trio.open_nursery() as nursery:
            leader_scope = trio.CancelScope()
            leader = _appender(one, namespace)

            async def lead(task_status: trio.TaskStatus[None]) -> None:
                with leader_scope:
                    await leader.run(task_status=task_status)

            await nursery.start(lead)
            assert leader.leader
            await nursery.start(follower.run)
            await _commit(two, follower, user, "x", 15)
            await _until_appended(client, namespace, 15)
            leader_scope.cancel()  # the leader goes (its lease is released)
            await _commit(two, follower, user, "y", 15)  # committed with no leader
            with trio.fail_after(ELECTION * 5):
                await _until_appended(client, namespace, 30)
            assert follower.leader
            nursery.cancel_scope.cancel()
        entries = await _entries(client, namespace)
        assert set(entries) == {(f"r{i}", s) for i in range(3) for s in range(1, 11)}


async def test_an_id_committed_after_a_larger_one_is_appended_and_the_cursor_waits_for_it(
    redis: tuple[coredis.Redis[bytes], str],
) -> None:
    """PostgreSQL: a batch that took its id first commits last (another host's, in flight);
    the cursor stays below it until it commits, then it is appended; a rolled-back id is let
    go once its transaction is over."""
    client, namespace = redis
    databases = TestDatabases()
    try:
        url = databases.url("gaps")
        async with _opened(url) as store:
            user = (await store.create_user("ann", "pw-pw-pw-pw")).id
            for room in ("r0", "r1", "r2"):
                await store.create_room(room, user)
            appender = _appender(store, namespace)
            async with trio.open_nursery() as nursery:
                await nursery.start(appender.run)
                with psycopg.connect(url) as slow, psycopg.connect(url) as undone:
                    late = _insert_uncommitted(slow, "r0", user)
                    gone = _insert_uncommitted(undone, "r1", user)
                    await _commit(store, appender, user, "z", 6, ("r2",))  # r2 only: rooms unlocked
                    await _until_appended(client, namespace, 6)
                    cursors = await store.events.event_cursors()
                    assert max(cursors.values()) < min(late, gone)
                    undone.rollback()
                    slow.commit()
                    await _until_appended(client, namespace, 7)
                with trio.fail_after(STEP):
                    while min((await store.events.event_cursors()).values()) <= late:  # noqa: ASYNC110 (the database's state)
                        await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
        entries = await _entries(client, namespace)
        assert sorted(entries) == [("r0", 1)] + [("r2", s) for s in range(1, 7)]
    finally:
        databases.drop_all()


def _insert_uncommitted(conn: psycopg.Connection[tuple[object, ...]], room: str, user: int) -> int:
    """What a batch does, left uncommitted: lock the room (a transaction id), take an id."""
    row = conn.execute("SELECT id FROM rooms WHERE name = %s FOR UPDATE", (room,)).fetchone()
    assert row is not None
    inserted = conn.execute(
        "INSERT INTO messages (room_id, seq, user_id, user_name, text, ts)"
        " VALUES (%s, 1, %s, 'ann', 'late', 0) RETURNING id",
        (row[0], user),
    ).fetchone()
    conn.execute("UPDATE rooms SET last_seq = 1 WHERE id = %s", (row[0],))
    assert inserted is not None
    return int(str(inserted[0]))

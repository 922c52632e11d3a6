"""`hibiki shards move` while two nodes keep sending to the moving shard's rooms (a catalog and
two shard databases on the local PostgreSQL): no acked message lost, no seq reused, history the
same before and after, and both nodes switch without being told except by the fence."""

from __future__ import annotations

import re
from functools import partial

import psycopg
import pytest
import trio

from server.cli import main
from storage import Appended, NewMessage, Store, User, open_store
from storage.postgres import target_of
from storage.routing import (
    SHARD_LOCK_KEY,
    SHARD_MIGRATIONS,
    SHARD_VERSION_TABLE,
    apply_shard_schema,
)
from storage.routing.move import move_logical
from storage.routing.sharded_store import ShardedStore
from storage.routing.shards import logical_shard
from tests.postgres import LentDatabases

from .conftest import rooms_on

SCRYPT_N = 2**10


def _store(catalog: str, shards: list[str]) -> Store:
    return open_store(catalog, scrypt_n=SCRYPT_N, shards=shards)


async def _history(store: Store, room: str) -> list[tuple[int, int, str]]:
    page, more = await store.history(room, None, 100_000)
    assert not more
    return [(m.id, m.seq, m.text) for m in page]


async def test_moving_a_logical_shard_while_two_nodes_send_loses_and_reuses_nothing(
    databases: LentDatabases, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    hot, other = rooms_on(2, 2, "hot")[0]  # both on shard0, on different logical shards
    assert logical_shard(hot) != logical_shard(other)
    acked: list[Appended] = []
    async with _store(catalog, shards) as node1, _store(catalog, shards) as node2:
        alice = await node1.create_user("alice", "pw")
        for room in (hot, other):
            await node1.create_room(room, alice.id)
        await _send(node1, alice, [hot, other], 300, acked, "warm")  # history before the move
        before = {room: await _history(node1, room) for room in (hot, other)}
        argv = ["shards", "move", str(logical_shard(hot)), "--to", shards[1], "--db", catalog]
        argv += ["--db-shard", shards[0], "--db-shard", shards[1]]
        moved = trio.Event()
        code: list[int] = []

        async def move() -> None:
            code.append(await trio.to_thread.run_sync(partial(main, argv)))
            moved.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(move)
            for i, node in enumerate((node1, node2)):
                nursery.start_soon(_send_until, node, alice, hot, moved, acked, f"n{i}")
        await _send(node2, alice, [hot], 20, acked, "after")  # both nodes write on the new home
        await _send(node1, alice, [hot], 20, acked, "after1")
        after = {room: await _history(node2, room) for room in (hot, other)}
        for node in (node1, node2):  # each learned of the switch from the fence, and re-read
            assert isinstance(node, ShardedStore)
            assert node.sharded.refreshes >= 1
            assert node.sharded.directory.place(hot).target == target_of(shards[1])
            assert node.sharded.directory.place(other).target == target_of(shards[0])
    assert code == [0]
    report = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n{report}", end="")
    held = re.search(r"\((\d+) of them since the bulk copy\)", report)
    assert held is not None and int(held[1]) > 0  # writes came in during the copy
    _check(acked, before, after, hot)
    _check_rows(shards, hot, other, len(after[hot]))
    status = ["shards", "status", "--db", catalog, "--db-shard", shards[0], "--db-shard", shards[1]]
    assert await trio.to_thread.run_sync(partial(main, status)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "directory version 1"
    rows = {line.split()[0]: line.split()[1:6] for line in lines[2:4]}  # logical pinned owned
    assert rows[target_of(shards[0])] == ["127", "0", "127", "1", str(len(after[other]))]
    assert rows[target_of(shards[1])] == ["129", "0", "129", "1", str(len(after[hot]))]


async def _send(
    store: Store, user: User, rooms: list[str], count: int, acked: list[Appended], tag: str
) -> None:
    for i in range(0, count, 10):
        batch = [_msg(rooms[(i + k) % len(rooms)], user, f"{tag}-{i + k}") for k in range(10)]
        acked.extend(await store.append_batch(batch))


async def _send_until(
    store: Store, user: User, room: str, stop: trio.Event, acked: list[Appended], tag: str
) -> None:
    """Batches of 5 to `room`, until the move is done; every batch must be acked, none refused."""
    i = 0
    while not stop.is_set():
        batch = [_msg(room, user, f"{tag}-{i + k}", f"{tag}-{i + k}") for k in range(5)]
        acked.extend(await store.append_batch(batch))
        i += 5


def _msg(room: str, user: User, text: str, client_id: str | None = None) -> NewMessage:
    return NewMessage(room, user.id, user.name, text, client_id)


def _check(
    acked: list[Appended],
    before: dict[str, list[tuple[int, int, str]]],
    after: dict[str, list[tuple[int, int, str]]],
    hot: str,
) -> None:
    assert not any(a.duplicate for a in acked)
    for room, history in after.items():
        mine = sorted(
            (a.message.id, a.message.seq, a.message.text) for a in acked if a.message.room == room
        )
        assert [seq for _, seq, _ in history] == list(range(1, len(history) + 1))  # no reuse
        assert sorted(history) == mine  # every acked message, nothing else
        assert history[: len(before[room])] == before[room]  # the old history, unchanged
    assert len(after[hot]) > len(before[hot]) + 40


def _check_rows(shards: list[str], hot: str, other: str, hot_count: int) -> None:
    """The hot room's rows moved to shard1 and left shard0; the other room stayed."""
    counts = []
    for url in shards:
        with psycopg.connect(url) as conn:
            counts.append(
                dict(
                    conn.execute(
                        "SELECT r.name, count(m.id) FROM shard_rooms r"
                        " LEFT JOIN shard_messages m USING (room_id) GROUP BY r.name"
                    ).fetchall()
                )
            )
    assert hot not in counts[0] and counts[1] == {hot: hot_count}
    assert other in counts[0]


@pytest.mark.parametrize("stopped_after", ["fence", "own"])
async def test_a_move_stopped_past_its_fence_is_finished_by_running_it_again(
    databases: LentDatabases, stopped_after: str
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    room = rooms_on(2, 1, "resumed")[0][0]
    shard = logical_shard(room)
    known = {target_of(url): url for url in shards}
    async with _store(catalog, shards) as store:
        alice = await store.create_user("alice", "pw")
        await store.create_room(room, alice.id)
        first = await store.append_batch([_msg(room, alice, f"m{i}") for i in range(5)])
        with psycopg.connect(shards[0], autocommit=True) as src:  # the fence committed, then...
            src.execute("DELETE FROM shard_owned WHERE unit = %s", (f"L{shard}",))
        if stopped_after == "own":  # ... the target was given the unit, the switch never ran
            with psycopg.connect(shards[1], autocommit=True) as dst:
                apply_shard_schema(dst, SHARD_VERSION_TABLE, SHARD_MIGRATIONS, SHARD_LOCK_KEY)
                _copy_all(shards[0], dst)
                dst.execute("INSERT INTO shard_owned (unit) VALUES (%s)", (f"L{shard}",))
        result = await trio.to_thread.run_sync(move_logical, catalog, known, shard, shards[1])
        assert result.version == 1 and result.target == target_of(shards[1])
        later = await store.append_batch([_msg(room, alice, "after")])
        page, _ = await store.history(room, None, 10)
    assert [a.message.seq for a in first + later] == [1, 2, 3, 4, 5, 6]
    assert [m.text for m in page] == ["m0", "m1", "m2", "m3", "m4", "after"]
    with psycopg.connect(shards[0]) as src:
        assert src.execute("SELECT count(*) FROM shard_messages").fetchone() == (0,)


def _copy_all(src_url: str, dst: psycopg.Connection[tuple[object, ...]]) -> None:
    with psycopg.connect(src_url) as src:
        rooms = src.execute("SELECT room_id, name, logical, last_seq FROM shard_rooms").fetchall()
        rows = src.execute(
            "SELECT id, room_id, seq, user_id, user_name, text, ts, client_id FROM shard_messages"
        ).fetchall()
    with dst.cursor() as cur:
        cur.executemany("INSERT INTO shard_rooms VALUES (%s, %s, %s, %s)", rooms)
        cur.executemany(
            "INSERT INTO shard_messages (id, room_id, seq, user_id, user_name, text, ts, client_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )

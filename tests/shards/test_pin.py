"""`hibiki shards pin ROOM --to URL` while two nodes send to the room and to a neighbour on the
same logical shard: the room moves alone (the neighbour stays), nothing acked is lost or
renumbered, and a later move of the logical shard leaves the pin where it is."""

from __future__ import annotations

from functools import partial

import psycopg
import trio

from server.cli import main
from storage import Appended, NewMessage, Store, User, open_store
from storage.postgres import target_of
from storage.routing.sharded_store import ShardedStore
from storage.routing.shards import logical_shard
from tests.postgres import LentDatabases

from .conftest import rooms_on


def _msg(room: str, user: User, text: str) -> NewMessage:
    return NewMessage(room, user.id, user.name, text, text)


def _neighbour_of(room: str) -> str:
    i = 0
    while logical_shard(f"n{i}") != logical_shard(room) or f"n{i}" == room:
        i += 1
    return f"n{i}"


async def _send_until(
    store: Store, user: User, rooms: list[str], stop: trio.Event, acked: list[Appended], tag: str
) -> None:
    i = 0
    while not stop.is_set():
        batch = [_msg(rooms[k % len(rooms)], user, f"{tag}-{i + k}") for k in range(4)]
        acked.extend(await store.append_batch(batch))
        i += 4


def _held(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT r.name, count(m.id) FROM shard_rooms r"
            " LEFT JOIN shard_messages m USING (room_id) GROUP BY r.name"
        ).fetchall()
    return {str(name): int(count) for name, count in rows}


async def test_pinning_a_hot_room_moves_it_alone_while_two_nodes_send(
    databases: LentDatabases,
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    hot = rooms_on(2, 1, "hot")[0][0]
    neighbour = _neighbour_of(hot)
    flags = ["--db", catalog, "--db-shard", shards[0], "--db-shard", shards[1]]
    acked: list[Appended] = []
    open_node = partial(open_store, catalog, scrypt_n=2**10, shards=shards)
    async with open_node() as node1, open_node() as node2:
        alice = await node1.create_user("alice", "pw")
        for room in (hot, neighbour):
            await node1.create_room(room, alice.id)
        acked += await node1.append_batch([_msg(hot, alice, f"warm-{i}") for i in range(50)])
        pinned = trio.Event()
        codes: list[int] = []

        async def pin() -> None:
            argv = ["shards", "pin", hot, "--to", shards[1], *flags]
            codes.append(await trio.to_thread.run_sync(partial(main, argv)))
            pinned.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pin)
            for i, node in enumerate((node1, node2)):
                nursery.start_soon(
                    _send_until, node, alice, [hot, neighbour], pinned, acked, f"n{i}"
                )
        assert codes == [0]
        assert _held(shards[0]) == {
            neighbour: len([a for a in acked if a.message.room == neighbour])
        }
        assert _held(shards[1]) == {hot: len([a for a in acked if a.message.room == hot])}
        # Moving the logical shard now takes the neighbour; the pinned room stays put.
        move = ["shards", "move", str(logical_shard(hot)), "--to", shards[1], *flags]
        assert await trio.to_thread.run_sync(partial(main, move)) == 0
        for node in (node1, node2):
            late = [_msg(room, alice, f"late-{id(node)}-{room}") for room in (hot, neighbour)]
            acked += await node.append_batch(late)
            assert isinstance(node, ShardedStore)
            assert node.sharded.directory.pins == {hot: target_of(shards[1])}
        histories = {
            room: (await node2.history(room, None, 10_000))[0] for room in (hot, neighbour)
        }
    for room, page in histories.items():
        # By seq: ids rise in each batch's order, not across nodes' concurrent batches.
        mine = sorted((a.message.seq, a.message.id) for a in acked if a.message.room == room)
        assert [(m.seq, m.id) for m in page] == mine
        assert [m.seq for m in page] == list(range(1, len(page) + 1))
    assert _held(shards[0]) == {}

"""`hibiki shards unpin ROOM`: a pinned room goes back onto its logical shard's database while two
nodes send to it and to a neighbour on the same logical shard; `status` shows pins and sizes;
a pin on the logical shard's own database is dropped in place; a second operation on the same
logical shard is refused while one runs."""

from __future__ import annotations

import re
from functools import partial

import psycopg
import pytest
import trio

from server.cli import main
from storage import Appended, Store, open_store
from storage.postgres import target_of
from storage.routing.move import MoveFailed, one_at_a_time
from storage.routing.pin import pin_room, unpin_room
from storage.routing.shard_status import Sizes, status
from storage.routing.sharded_store import ShardedStore
from storage.routing.shards import logical_shard
from tests.postgres import LentDatabases

from .conftest import rooms_on
from .test_move import _copy_all
from .test_pin import _held, _msg, _neighbour_of, _send_until


def _cli(*args: str) -> int:
    return main(list(args))


async def _histories(store: Store, rooms: list[str]) -> dict[str, list[tuple[int, int, str]]]:
    return {
        room: [(m.seq, m.id, m.text) for m in (await store.history(room, None, 10_000))[0]]
        for room in rooms
    }


async def test_unpinning_a_room_while_two_nodes_send_loses_and_reuses_nothing(
    databases: LentDatabases, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    hot = rooms_on(2, 1, "hot")[0][0]  # its logical shard is on shards[0]
    neighbour = _neighbour_of(hot)
    flags = ["--db", catalog, "--db-shard", shards[0], "--db-shard", shards[1]]
    acked: list[Appended] = []
    open_node = partial(open_store, catalog, scrypt_n=2**10, shards=shards)
    async with open_node() as node1, open_node() as node2:
        alice = await node1.create_user("alice", "pw")
        for room in (hot, neighbour):
            await node1.create_room(room, alice.id)
        acked += await node1.append_batch([_msg(hot, alice, f"warm-{i}") for i in range(40)])
        pin = ["shards", "pin", hot, "--to", shards[1], *flags]
        assert await trio.to_thread.run_sync(partial(main, pin)) == 0
        acked += await node2.append_batch([_msg(hot, alice, f"pinned-{i}") for i in range(40)])
        before = await _histories(node1, [hot, neighbour])
        unpinned = trio.Event()
        codes: list[int] = []

        async def unpin() -> None:
            codes.append(
                await trio.to_thread.run_sync(partial(_cli, "shards", "unpin", hot, *flags))
            )
            unpinned.set()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(unpin)
                for i, node in enumerate((node1, node2)):
                    nursery.start_soon(
                        _send_until, node, alice, [hot, neighbour], unpinned, acked, f"n{i}"
                    )
        assert codes == [0]
        report = capsys.readouterr().out
        held = re.search(r"unpinned .* \((\d+) of them since the bulk copy\)", report)
        assert held is not None and int(held[1]) > 0  # writes came in during the copy
        for node in (node1, node2):  # a send after the switch finds the room on its shard again
            acked += await node.append_batch([_msg(hot, alice, f"late-{id(node)}")])
            assert isinstance(node, ShardedStore)
            assert node.sharded.directory.pins == {}
        after = await _histories(node2, [hot, neighbour])
    for room in (hot, neighbour):
        mine = sorted(
            (a.message.seq, a.message.id, a.message.text) for a in acked if a.message.room == room
        )
        assert after[room] == mine  # every acked message, once
        assert [seq for seq, _, _ in after[room]] == list(range(1, len(mine) + 1))  # no seq reused
        assert after[room][: len(before[room])] == before[room]  # history unchanged
    assert _held(shards[1]) == {}  # the pin's copy is deleted
    assert _held(shards[0]) == {room: len(after[room]) for room in (hot, neighbour)}


async def test_status_shows_the_map_the_pins_and_the_sizes(
    databases: LentDatabases, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    (a, b), (c,) = rooms_on(2, 2, "s")[0], rooms_on(2, 1, "t")[1]
    async with open_store(catalog, scrypt_n=2**10, shards=shards) as store:
        alice = await store.create_user("alice", "pw")
        for room, count in ((a, 3), (b, 5), (c, 7)):
            await store.create_room(room, alice.id)
            await store.append_batch([_msg(room, alice, f"{room}-{i}") for i in range(count)])
    urls = {target_of(u): u for u in shards}
    await trio.to_thread.run_sync(pin_room, catalog, urls, b, shards[1])
    found = await trio.to_thread.run_sync(status, catalog, urls)
    t0, t1 = target_of(shards[0]), target_of(shards[1])
    assert found.version == 1
    assert [(d.target, d.logical, d.pinned, d.rooms, d.messages) for d in found.databases] == [
        (t0, 128, 0, 1, 3),
        (t1, 128, 1, 2, 12),
    ]
    assert [(p.room, p.logical, p.target, p.messages) for p in found.pins] == [
        (b, logical_shard(b), t1, 5)
    ]
    assert len(found.logical) == 256
    assert found.logical[logical_shard(a)] == (t0, Sizes(1, 3))
    assert found.logical[logical_shard(c)] == (t1, Sizes(1, 7))
    if logical_shard(b) != logical_shard(a):  # the pin is not counted in its logical shard
        assert found.logical[logical_shard(b)] == (t0, Sizes(0, 0))
    flags = ["--db", catalog, "--db-shard", shards[0], "--db-shard", shards[1]]
    assert await trio.to_thread.run_sync(partial(_cli, "shards", "status", *flags)) == 0
    out = capsys.readouterr().out.splitlines()
    assert "pinned rooms: 1" in out
    assert out[out.index("pinned rooms: 1") + 2].split() == [b, str(logical_shard(b)), t1, "5"]
    rows = {line.split()[0]: line.split()[1:] for line in out if line[:7].strip().isdigit()}
    assert len(rows) == 256
    assert rows[str(logical_shard(c))] == [t1, "1", "7"]


async def test_a_pin_on_the_logical_shards_own_database_is_dropped_in_place(
    databases: LentDatabases, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    hot = rooms_on(2, 1, "inplace")[0][0]
    flags = ["--db", catalog, "--db-shard", shards[0], "--db-shard", shards[1]]
    logical = str(logical_shard(hot))
    async with open_store(catalog, scrypt_n=2**10, shards=shards) as store:
        alice = await store.create_user("alice", "pw")
        await store.create_room(hot, alice.id)
        acked = await store.append_batch([_msg(hot, alice, f"m-{i}") for i in range(20)])
        for argv in (["pin", hot, "--to", shards[1]], ["move", logical, "--to", shards[1]]):
            assert await trio.to_thread.run_sync(partial(_cli, "shards", *argv, *flags)) == 0
        capsys.readouterr()
        assert await trio.to_thread.run_sync(partial(_cli, "shards", "unpin", hot, *flags)) == 0
        assert "20 messages (0 of them since the bulk copy)" in capsys.readouterr().out
        acked += await store.append_batch([_msg(hot, alice, "after")])
        assert isinstance(store, ShardedStore)
        assert store.sharded.directory.pins == {}
        # It is part of its logical shard again: moving the shard back takes it along.
        back = ["move", logical, "--to", shards[0]]
        assert await trio.to_thread.run_sync(partial(_cli, "shards", *back, *flags)) == 0
        acked += await store.append_batch([_msg(hot, alice, "back")])
        page, _ = await store.history(hot, None, 100)
    assert [(m.seq, m.id) for m in page] == [(a.message.seq, a.message.id) for a in acked]
    assert [m.seq for m in page] == list(range(1, 23))
    assert _held(shards[1]) == {}
    assert _held(shards[0]) == {hot: 22}
    with psycopg.connect(shards[1]) as conn:
        assert conn.execute(
            "SELECT count(*) FROM shard_owned WHERE unit LIKE 'room:%'"
        ).fetchone() == (0,)


async def test_unpin_refuses_a_room_that_is_not_pinned_and_a_shard_that_is_busy(
    databases: LentDatabases, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    room = rooms_on(2, 1, "idle")[0][0]
    flags = ["--db", catalog, "--db-shard", shards[0], "--db-shard", shards[1]]
    async with open_store(catalog, scrypt_n=2**10, shards=shards) as store:
        alice = await store.create_user("alice", "pw")
        await store.create_room(room, alice.id)
    assert await trio.to_thread.run_sync(partial(_cli, "shards", "unpin", room, *flags)) == 1
    assert f"room {room!r} is not pinned" in capsys.readouterr().err
    with psycopg.connect(catalog, autocommit=True) as other:
        with one_at_a_time(other, logical_shard(room)):  # e.g. a move of its shard, running
            pin = ["shards", "pin", room, "--to", shards[1], *flags]
            assert await trio.to_thread.run_sync(partial(main, pin)) == 1
            assert "another `hibiki shards` operation" in capsys.readouterr().err
        with pytest.raises(MoveFailed, match="already on"):  # the lock is free again
            urls = {target_of(u): u for u in shards}
            await trio.to_thread.run_sync(pin_room, catalog, urls, room, shards[0])


@pytest.mark.parametrize("stopped_after", ["fence", "take"])
async def test_an_unpin_stopped_past_its_fence_is_finished_by_running_it_again(
    databases: LentDatabases, stopped_after: str
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    room = rooms_on(2, 1, "resumed")[0][0]
    urls = {target_of(u): u for u in shards}
    async with open_store(catalog, scrypt_n=2**10, shards=shards) as store:
        alice = await store.create_user("alice", "pw")
        await store.create_room(room, alice.id)
        first = await store.append_batch([_msg(room, alice, f"m{i}") for i in range(5)])
        await trio.to_thread.run_sync(pin_room, catalog, urls, room, shards[1])
        with psycopg.connect(shards[1], autocommit=True) as pinned:  # the fence committed...
            pinned.execute("DELETE FROM shard_owned WHERE unit = %s", (f"room:{room}",))
        if stopped_after == "take":  # ... the shard's database took the room, no switch yet
            with psycopg.connect(shards[0], autocommit=True) as home:
                _copy_all(shards[1], home)
                home.execute("UPDATE shard_owned SET away = array_remove(away, %s)", (room,))
        result = await trio.to_thread.run_sync(unpin_room, catalog, urls, room)
        assert result.version == 2 and result.target == target_of(shards[0])
        later = await store.append_batch([_msg(room, alice, "after")])
        page, _ = await store.history(room, None, 10)
    assert [a.message.seq for a in first + later] == [1, 2, 3, 4, 5, 6]
    assert [m.text for m in page] == ["m0", "m1", "m2", "m3", "m4", "after"]
    assert _held(shards[1]) == {}

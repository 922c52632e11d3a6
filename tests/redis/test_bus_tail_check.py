"""The Redis bus's tail check against a real SQLite store: every idle live room compared with
the store in one read per interval, not one read per room."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import trio

from server.fanout.bus import ConnId
from server.redis.bus import RedisBus
from server.redis.link import RedisLink
from storage import NewMessage, Store, open_store

ROOMS = 600  # more than one statement's chunk of names (500)


class CountingStore:
    """The real store, with its calls of the two reads the bus may use counted."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.single = 0
        self.batched: list[int] = []  # rooms per last_seqs call

    async def last_seq(self, room: str) -> int:
        self.single += 1
        return await self._store.last_seq(room)

    async def last_seqs(self, rooms: Collection[str]) -> dict[str, int]:
        self.batched.append(len(rooms))
        return await self._store.last_seqs(rooms)


class IdleHub:
    """Live rooms that delivered nothing: what the store says of each is recorded."""

    def __init__(self, rooms: list[str]) -> None:
        self.rooms = rooms
        self.caught_up: dict[str, int] = {}
        self.all_seen = trio.Event()

    def idle_rooms(self) -> list[tuple[str, int]]:
        return [(room, 0) for room in self.rooms]

    def catch_up(self, room: str, last_seq: int) -> None:
        self.caught_up[room] = last_seq
        if len(self.caught_up) == len(self.rooms):
            self.all_seen.set()

    def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        raise AssertionError("nothing is published in this test")

    def publish_event(self, room: str, payload: bytes, exclude: ConnId) -> None:
        raise AssertionError("nothing is published in this test")


async def test_tail_check_reads_every_idle_room_from_the_store_in_one_call(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path / "hibiki.db", scrypt_n=2**10) as store:
        alice = await store.create_user("alice", "pw")
        rooms = [f"r{i}" for i in range(ROOMS)]
        for room in rooms:
            await store.create_room(room, alice.id)
        await store.append_batch(
            [
                NewMessage(room="r7", user_id=alice.id, user_name="alice", text=t, client_id=None)
                for t in "ab"
            ]
        )
        counting = CountingStore(store)
        # Never run: the tail check needs no Redis (it reads the store only).
        link = RedisLink("redis://127.0.0.1:1/0", namespace="t")
        bus = RedisBus(link, counting, tail_interval=0.05)
        hub = IdleHub(rooms)
        bus.attach_hub(hub)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(bus.run)
                await hub.all_seen.wait()
                nursery.cancel_scope.cancel()
    assert counting.single == 0
    assert counting.batched[0] == ROOMS
    assert hub.caught_up["r7"] == 2
    assert {seq for room, seq in hub.caught_up.items() if room != "r7"} == {0}

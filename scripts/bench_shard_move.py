"""Move time of one logical shard holding N messages (`hibiki shards move`), against a floor, and
the writers' wait while it runs; one run.

A catalog and two shard databases (`hibiki_s_bench_*`) on one PostgreSQL server. `--rooms`
rooms, all on one logical shard L (on shard0), get `--messages` messages by direct SQL. Then:

- move idle: `move_logical` L shard0 -> shard1 with no writers (bulk COPY, verify, hold, delta,
  verify, switch, delete the old copy);
- floor: the same rows COPYed from shard1 into a third database's empty `shard_messages`, one
  transaction, no verification, no delete;
- move loaded: L back shard1 -> shard0 while one writer sends batches of 10 to L's rooms
  through the sharded store: the hold, and the writer's p50 and max batch time during the move.

    python scripts/bench_shard_move.py --messages 200000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from functools import partial
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
import trio

from storage import NewMessage, Store, User, open_store
from storage.postgres import target_of
from storage.routing import (
    SHARD_LOCK_KEY,
    SHARD_MIGRATIONS,
    SHARD_VERSION_TABLE,
    apply_shard_schema,
)
from storage.routing.move import MoveResult, move_logical
from storage.routing.sharded_store import ShardedStore
from storage.routing.shards import logical_shard

TEXT = "the quick brown fox jumps over the lazy dog while five wizards box quickly"


def _rooms_on(logical: int, count: int) -> list[str]:
    names, i = [], 0
    while len(names) < count:
        if logical_shard(f"bench-{i}") == logical:
            names.append(f"bench-{i}")
        i += 1
    return names


def _fill(catalog: str, shard: str, rooms: list[str], messages: int, logical: int) -> None:
    with psycopg.connect(catalog, autocommit=True) as cat:
        ids = dict(cat.execute("SELECT name, id FROM rooms WHERE name = ANY(%s)", (rooms,)))
        cat.execute("SELECT setval('shard_message_ids', %s)", (messages + 1,))
    per_room = messages // len(rooms)
    with psycopg.connect(shard) as conn:
        for name in rooms:
            conn.execute(
                "INSERT INTO shard_rooms (room_id, name, logical, last_seq)"
                " VALUES (%s, %s, %s, %s)",
                (ids[name], name, logical, per_room),
            )
            conn.execute(
                "INSERT INTO shard_messages (id, room_id, seq, user_id, user_name, text, ts,"
                " client_id) SELECT %s::bigint * %s::bigint + s, %s, s, 1, 'u', %s || s,"
                " 1700000000000 + s, 'c' || s FROM generate_series(1, %s) AS s",
                (rooms.index(name), per_room, ids[name], TEXT, per_room),
            )


def _floor(src: str, scratch: str, logical: int) -> float:
    started = time.perf_counter()
    query = (
        "COPY (SELECT m.* FROM shard_messages m JOIN shard_rooms r USING (room_id)"
        " WHERE r.logical = %s) TO STDOUT"
    )
    with (
        psycopg.connect(src) as a,
        psycopg.connect(scratch) as b,
        a.cursor().copy(query, (logical,)) as out,
        b.cursor().copy("COPY floor_messages FROM STDIN") as into,
    ):
        for data in out:
            into.write(data)
    return time.perf_counter() - started


async def _writer(
    store: Store, user: User, rooms: list[str], stop: trio.Event, times: list[float]
) -> None:
    """Batches of 10 over `rooms` until `stop`; each batch's time into `times`."""
    i = 0
    while not stop.is_set():
        batch = [
            NewMessage(rooms[(i + k) % len(rooms)], user.id, "u", "w", None) for k in range(10)
        ]
        started = time.perf_counter()
        await store.append_batch(batch)
        times.append(time.perf_counter() - started)
        i += 10


async def _loaded_move(
    store: Store, user: User, rooms: list[str], move: partial[MoveResult]
) -> tuple[MoveResult, list[float], list[float]]:
    """Batch times for 200 batches before the move, and during it; the move's result."""
    before: list[float] = []
    during: list[float] = []
    for _ in range(200):
        started = time.perf_counter()
        await store.append_batch([NewMessage(rooms[0], user.id, "u", "b", None)] * 10)
        before.append(time.perf_counter() - started)
    result: list[MoveResult] = []
    stop = trio.Event()

    async def run_move() -> None:
        result.append(await trio.to_thread.run_sync(move))
        stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_writer, store, user, rooms, stop, during)
        nursery.start_soon(run_move)
    return result[0], before, during


async def _run(args: argparse.Namespace, urls: dict[str, str]) -> None:
    logical = 7
    rooms = _rooms_on(logical, args.rooms)
    shards = [urls["shard0"], urls["shard1"]]
    known = {target_of(u): u for u in shards}
    async with open_store(urls["catalog"], scrypt_n=2**10, shards=shards) as store:
        assert isinstance(store, ShardedStore)
        user = await store.create_user("u", "pw")
        for room in rooms:
            await store.create_room(room, user.id)
        src = known[store.sharded.directory.logical[logical]]
        dst = next(u for u in shards if u != src)
        _fill(urls["catalog"], src, rooms, args.messages, logical)
        idle = await trio.to_thread.run_sync(move_logical, urls["catalog"], known, logical, dst)
        with psycopg.connect(urls["scratch"], autocommit=True) as scratch:
            apply_shard_schema(scratch, SHARD_VERSION_TABLE, SHARD_MIGRATIONS, SHARD_LOCK_KEY)
            # The same columns and indexes, without the foreign key to shard_rooms.
            scratch.execute("CREATE TABLE floor_messages (LIKE shard_messages INCLUDING ALL)")
        floor = _floor(dst, urls["scratch"], logical)
        back = partial(move_logical, urls["catalog"], known, logical, src)
        loaded, before, during = await _loaded_move(store, user, rooms, back)
    n = args.messages
    print(f"{n} messages in {args.rooms} rooms of logical shard {logical}")
    print(
        f"move idle:   {idle.seconds:.2f} s ({n / idle.seconds:,.0f} msg/s),"
        f" writers held {idle.hold_seconds * 1000:.1f} ms"
    )
    print(
        f"floor COPY:  {floor:.2f} s (no verify, no delete);"
        f" move/floor = {idle.seconds / floor:.2f}"
    )
    print(
        f"move loaded: {loaded.seconds:.2f} s, {loaded.messages} messages,"
        f" {loaded.delta} since the bulk copy, writers held {loaded.hold_seconds * 1000:.1f} ms"
    )
    print(
        f"writer batch of 10: p50 {statistics.median(before) * 1000:.2f} ms before,"
        f" during the move p50 {statistics.median(during) * 1000:.2f} ms,"
        f" max {max(during) * 1000:.1f} ms ({len(during)} batches, none refused)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    prefix = f"hibiki_s_bench_{uuid.uuid4().hex[:8]}"
    names = ["catalog", "shard0", "shard1", "scratch"]
    with psycopg.connect(f"{args.pg}/test", autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{prefix}_{name}"')
        try:
            trio.run(_run, args, {n: f"{args.pg}/{prefix}_{n}" for n in names})
        finally:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{prefix}_{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

"""How much data adding a database moves: `hash % n` against logical shards (measured, printed)."""

from __future__ import annotations

from collections import Counter

from storage.routing.shards import (
    LOGICAL_SHARDS,
    logical_shard,
    modulo_shard,
    moved_fraction,
    rebalance,
    spread,
)

ROOMS = [f"room-{i}" for i in range(20_000)]


def test_adding_a_fourth_database_moves_a_quarter_with_logical_shards_and_not_three() -> None:
    before_mod = {room: f"db{modulo_shard(room, 3)}" for room in ROOMS}
    after_mod = {room: f"db{modulo_shard(room, 4)}" for room in ROOMS}
    naive = moved_fraction(ROOMS, before_mod, after_mod)

    three = spread(["db0", "db1", "db2"])
    four = three | rebalance(three, ["db0", "db1", "db2", "db3"])
    before = {room: three[logical_shard(room)] for room in ROOMS}
    after = {room: four[logical_shard(room)] for room in ROOMS}
    logical = moved_fraction(ROOMS, before, after)

    print(
        f"\nrooms moved going 3 -> 4 databases: hash % n {naive:.3f}, logical shards {logical:.3f}"
    )
    assert 0.72 < naive < 0.78  # n/(n+1) = 0.75
    assert 0.22 < logical < 0.28  # 1/(n+1) = 0.25
    # Only whole logical shards moved, and only to the new database.
    moved = {s for s in range(LOGICAL_SHARDS) if three[s] != four[s]}
    assert {four[s] for s in moved} == {"db3"}
    assert len(moved) == LOGICAL_SHARDS // 4


def test_logical_shards_are_stable_and_spread_evenly() -> None:
    assert logical_shard("lobby") == logical_shard("lobby")
    assert all(0 <= logical_shard(room) < LOGICAL_SHARDS for room in ROOMS[:1000])
    per_database = Counter(spread(["a", "b", "c"]).values())
    assert sorted(per_database.values()) == [85, 85, 86]
    assert rebalance(spread(["a", "b", "c"]), ["a", "b", "c"]) == {}
    # Rebalancing after a database leaves the target list moves only its shards.
    moves = rebalance(spread(["a", "b", "c"]), ["a", "b"])
    assert len(moves) == per_database["c"] and set(moves.values()) <= {"a", "b"}

"""Rooms to logical shards, logical shards to physical databases: the pure part of sharding.

A room's logical shard is a stable hash of its name modulo `LOGICAL_SHARDS` (blake2b, so every
process, version and tool agrees; Python's `hash` is salted per process). The count is fixed for
the life of a deployment: changing it would move almost every room. 256 because it is
  - far more than the databases a chat deployment will run (tens), so whole logical shards
    still spread evenly: with n databases each holds 256/n +- 1 of them (within ~1/85 at n=3),
  - small enough that the directory is a 256-row table read in one query, and a move of one
    logical shard is ~1/256 of the data: a short hold, not a long one,
  - a power of two, so it can be split later (L -> L, L+256) if it ever needs to be.
Logical shards are assigned to databases by the directory (storage/routing/directory.py);
`spread` makes the first assignment and `rebalance` the moves that adding a database needs:
whole logical shards taken from the fullest databases, about 1/(n+1) of the data for the
(n+1)th, where `hash % n` would move about n/(n+1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

LOGICAL_SHARDS = 256


def logical_shard(room: str) -> int:
    """The room's logical shard, 0 <= L < LOGICAL_SHARDS; never changes."""
    digest = hashlib.blake2b(room.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % LOGICAL_SHARDS


def modulo_shard(room: str, databases: int) -> int:
    """The naive router the design started with (`hash(room) % n`): for comparison only."""
    digest = hashlib.blake2b(room.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % databases


def spread(targets: Sequence[str]) -> dict[int, str]:
    """The first assignment: logical shard L on `targets[L % n]` (each gets 256/n +- 1)."""
    if not targets:
        raise ValueError("no shard databases")
    return {shard: targets[shard % len(targets)] for shard in range(LOGICAL_SHARDS)}


def rebalance(assignment: Mapping[int, str], targets: Iterable[str]) -> dict[int, str]:
    """The moves (logical shard -> new target) that even out `assignment` over `targets`.

    Only shards on a database holding more than its share move, and only to one holding less,
    so adding one database to n moves about LOGICAL_SHARDS/(n+1) shards and nothing else.
    """
    names = list(dict.fromkeys(targets))
    held: dict[str, list[int]] = {name: [] for name in names}
    for shard, target in sorted(assignment.items()):
        held.setdefault(target, []).append(shard)
    quota, extra = divmod(LOGICAL_SHARDS, len(names))
    # The first `extra` databases (fullest first, then by name) keep one more than the quota.
    ranked = sorted(names, key=lambda name: (-len(held[name]), name))
    share = {name: quota + (1 if i < extra else 0) for i, name in enumerate(ranked)}
    spare = [s for name, shards in held.items() for s in shards[share.get(name, 0) :]]
    moves: dict[int, str] = {}
    for name in names:
        while len(held[name]) < share[name] and spare:
            shard = spare.pop()
            moves[shard] = name
            held[name].append(shard)
    return moves


def moved_fraction(
    rooms: Sequence[str], before: Mapping[str, str], after: Mapping[str, str]
) -> float:
    """The fraction of `rooms` whose database differs between two placements."""
    return sum(before[room] != after[room] for room in rooms) / len(rooms)

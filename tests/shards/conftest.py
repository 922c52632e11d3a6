"""Fixtures of the sharding tests: a catalog database and shard databases on the local
PostgreSQL (tests/postgres.py: skipped without it, failed under CI=true), and rooms chosen so
that each shard database serves some of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage.routing.shards import logical_shard
from tests.postgres import LentDatabases, ReusedDatabases


@pytest.fixture
def databases(reused_databases: ReusedDatabases) -> Iterator[LentDatabases]:
    """The test's empty databases by name, lent by the test process's pool (tests/postgres.py)."""
    with reused_databases.lend() as found:
        yield found


def rooms_on(shard_count: int, per_shard: int, prefix: str = "room") -> list[list[str]]:
    """`per_shard` room names for each of `shard_count` databases under the first assignment
    (`spread`: logical shard L on database L % n)."""
    out: list[list[str]] = [[] for _ in range(shard_count)]
    i = 0
    while any(len(names) < per_shard for names in out):
        name = f"{prefix}-{i}"
        names = out[logical_shard(name) % shard_count]
        if len(names) < per_shard:
            names.append(name)
        i += 1
    return out

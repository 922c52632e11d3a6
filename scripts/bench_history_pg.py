"""Latency of a history page of 50 on a large PostgreSQL database: from the primary, from a
streaming replica, and through the replica router, beside the floor (the same SQL on one
psycopg connection, no threads, no trio) measured in the same run.

Starts a primary and a streaming replica in a temp dir (tests/pg_cluster.py: initdb,
pg_basebackup -R, run as the postgres user, fsync off), applies hibiki's schema through
`open_store`, bulk-loads `--messages` with `INSERT ... SELECT generate_series` on the primary
(rooms interleaved round robin, as a busy server writes them), waits for the replica to replay
it, then times `--calls` random pages (before_seq uniform over each room's history) each way.

    python scripts/bench_history_pg.py                         # 1M messages
    python scripts/bench_history_pg.py --messages 10000000     # the issue's size
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a file from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
import trio

from storage import open_store, passwords
from storage.postgres.replica import PostgresReplica
from storage.routing import ProbePolicy, attach_replicas
from tests.pg_cluster import PgCluster, missing_reason

CHUNK = 1_000_000  # messages per INSERT
DB = "bench"
SETTINGS = (
    "shared_buffers = '2GB'",
    "max_wal_size = '16GB'",
    "checkpoint_timeout = '30min'",
    "wal_compression = on",
)
LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud"
)
_INSERT = """
INSERT INTO messages (id, room_id, seq, user_id, user_name, text, ts, client_id)
SELECT i + 1, i %% %(rooms)s + 1, i / %(rooms)s + 1, i / 7 %% %(users)s + 1,
       'user' || (i / 7 %% %(users)s),
       'message ' || i || ': ' || substr(%(lorem)s::text, (1 + i %% 50)::int, (20 + i %% 100)::int),
       1700000000000 + i, 'm' || i
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
"""
_PAGE = (
    "SELECT id, seq, user_name, text, ts, client_id FROM messages"
    " WHERE room_id = (SELECT id FROM rooms WHERE name = %s) AND seq < %s"
    " ORDER BY seq DESC LIMIT %s"
)

Pages = list[tuple[str, int | None]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--calls", type=int, default=5_000, help="timed pages per way")
    parser.add_argument("--warmup", type=int, default=1_000, help="untimed pages first")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args()


def build(cluster: PgCluster, args: argparse.Namespace) -> None:
    start = time.perf_counter()
    encoded = passwords.hash_password("pw", n=2**4)
    with cluster.primary.connect(DB) as conn:
        conn.execute("SET synchronous_commit = off")
        # Foreign-key triggers off while loading (rows made consistent by construction): they
        # would cost more than the insert itself.
        conn.execute("SET session_replication_role = replica")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO users (id, name, password_hash, created_at) VALUES (%s, %s, %s, 0)",
                [(u + 1, f"user{u}", encoded) for u in range(args.users)],
            )
            cur.executemany(
                "INSERT INTO rooms (id, name, created_by, created_at) VALUES (%s, %s, 1, 0)",
                [(r + 1, f"room{r}") for r in range(args.rooms)],
            )
        rebuild = _drop_message_indexes(conn)
        for first in range(0, args.messages, CHUNK):
            last = min(first + CHUNK, args.messages) - 1
            values = {"rooms": args.rooms, "users": args.users, "lorem": LOREM}
            conn.execute(_INSERT, {**values, "first": first, "last": last})
            rate = (last + 1) / (time.perf_counter() - start)
            print(f"  built {last + 1:,} messages ({rate:,.0f}/s)", flush=True)
        conn.execute("SET maintenance_work_mem = '1GB'")
        for statement in rebuild:
            conn.execute(statement)
        print(f"  indexes rebuilt ({time.perf_counter() - start:.0f} s)", flush=True)
        conn.execute(
            "UPDATE rooms SET last_seq = m.s FROM"
            " (SELECT room_id, max(seq) AS s FROM messages GROUP BY room_id) AS m"
            " WHERE rooms.id = m.room_id"
        )
        for table in ("users", "rooms", "messages"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" (SELECT max(id) FROM {table}))"
            )
        conn.execute("VACUUM ANALYZE")
    built = time.perf_counter() - start
    cluster.wait_caught_up(timeout=3600)
    print(
        f"built in {built:.0f} s ({args.messages / built:,.0f} messages/s), replica caught up"
        f" {time.perf_counter() - start - built:.0f} s later"
    )


def _drop_message_indexes(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """Drop the messages table's unique constraints and indexes (loading, then building each
    index once, is several times faster than maintaining them row by row); returns the
    statements that put the very same definitions back."""
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'messages'::regclass AND contype IN ('p', 'u')"
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'messages'"
        " AND indexname NOT IN (SELECT conname FROM pg_constraint"
        " WHERE conrelid = 'messages'::regclass)"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    for name, _ in constraints:
        conn.execute(f'ALTER TABLE messages DROP CONSTRAINT "{name}"')
    return [f'ALTER TABLE messages ADD CONSTRAINT "{n}" {d}' for n, d in constraints] + [
        str(d) for _, d in indexes
    ]


def percentiles(samples_ns: list[int]) -> str:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return f"p50 {at(0.50):6.0f} µs   p99 {at(0.99):6.0f} µs   max {ordered[-1] / 1000:7.0f} µs"


def p99_us(samples_ns: list[int]) -> float:
    return sorted(samples_ns)[int(0.99 * len(samples_ns))] / 1000


async def timed(
    pages: Pages, warmup: int, read: Callable[[str, int | None], Awaitable[int]]
) -> list[int]:
    for room, before in pages[:warmup]:
        await read(room, before)
    samples = []
    for room, before in pages[warmup:]:
        start = time.perf_counter_ns()
        rows = await read(room, before)
        samples.append(time.perf_counter_ns() - start)
        if rows == 0:
            raise SystemExit(f"empty page: {room} before {before}")
    return samples


def floor(url: str, pages: Pages, args: argparse.Namespace) -> list[int]:
    """The same page query on one connection, prepared, straight from this thread."""
    samples = []
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
        for i, (room, before) in enumerate(pages):
            start = time.perf_counter_ns()
            conn.execute(_PAGE, (room, before or 2**63 - 1, args.limit + 1)).fetchall()
            if i >= args.warmup:
                samples.append(time.perf_counter_ns() - start)
    return samples


async def measure(cluster: PgCluster, args: argparse.Namespace, pages: Pages) -> None:
    primary_url, replica_url = cluster.primary.url(DB), cluster.replica.url(DB)
    results: dict[str, list[int]] = {}
    limit = args.limit
    results["floor: primary, raw psycopg"] = floor(primary_url, pages, args)
    results["floor: replica, raw psycopg"] = floor(replica_url, pages, args)
    async with open_store(primary_url, pool_size=4) as store:

        async def on_store(room: str, before: int | None) -> int:
            return len((await store.history(room, before, limit))[0])

        results["primary: store.history"] = await timed(pages, args.warmup, on_store)
        replica = PostgresReplica(replica_url)
        await replica.open()
        try:

            async def on_replica(room: str, before: int | None) -> int:
                _, (page, _) = await replica.history_and_last_seq(room, before, limit)
                return len(page)

            results["replica: history_and_last_seq"] = await timed(pages, args.warmup, on_replica)
        finally:
            await replica.aclose()
        router = attach_replicas(store, [replica_url], ProbePolicy(max_lag=3600))
        assert router is not None
        await router.open()
        try:
            await router.replicas[0].probe()
            results["router, older pages (replica)"] = await timed(pages, args.warmup, on_store)
            newest: Pages = [(room, None) for room, _ in pages]
            results["router, newest page (replica)"] = await timed(newest, args.warmup, on_store)
            print(
                f"router: replica reads {router.counts.replica_reads:,},"
                f" primary reads {router.counts.primary_reads}"
            )
        finally:
            await router.aclose()
    report(results)


def report(results: dict[str, list[int]]) -> None:
    for name, samples in results.items():
        print(f"{name:36}: {percentiles(samples)}   ({len(samples):,} calls)")
    primary = p99_us(results["primary: store.history"])
    replica = p99_us(results["replica: history_and_last_seq"])
    primary_floor = p99_us(results["floor: primary, raw psycopg"])
    replica_floor = p99_us(results["floor: replica, raw psycopg"])
    print(
        f"p99 ratios: primary store / floor {primary / primary_floor:.2f},"
        f" replica / floor {replica / replica_floor:.2f}, replica / primary {replica / primary:.2f}"
    )


def main() -> None:
    args = parse_args()
    if (why := missing_reason()) is not None:
        raise SystemExit(why)
    with PgCluster.started(SETTINGS) as cluster:
        cluster.create_database(DB)
        trio.run(_migrate, cluster.primary.url(DB))
        print(f"building {args.messages:,} messages in {args.rooms} rooms")
        build(cluster, args)
        with cluster.primary.connect(DB) as conn:
            row = conn.execute("SELECT pg_size_pretty(pg_database_size(%s))", (DB,)).fetchone()
        print(f"database size: {row[0] if row else '?'}")
        rng = random.Random(args.seed)
        per_room = args.messages // args.rooms
        pages: Pages = [
            (f"room{rng.randrange(args.rooms)}", rng.randint(args.limit + 2, per_room))
            for _ in range(args.warmup + args.calls)
        ]
        trio.run(measure, cluster, args, pages)


async def _migrate(url: str) -> None:
    async with open_store(url, scrypt_n=2**4):
        pass


if __name__ == "__main__":
    main()

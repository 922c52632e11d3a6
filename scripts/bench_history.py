"""Latency of `store.history(room, before_seq, 50)` (`open_store` on a SQLite file) on a large
database.

Builds the database once (or reuses `--db`), then times random history pages end to end through
the store: trio -> reader thread -> SQLite -> `Message` structs -> trio. Rooms are interleaved
round-robin, so a room's consecutive messages sit on different table pages (the worst case for
locality, and what a busy server produces). For scale, some of the same pages are also fetched
straight through sqlite3, both by keyset and with LIMIT/OFFSET (the naive pagination).

    python scripts/bench_history.py                                   # 1M messages, temp file
    python scripts/bench_history.py --db /tmp/h10m.db --messages 10000000   # build once, reuse
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

from storage import open_store, passwords
from storage.sqlite import migrate

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud"
)
CHUNK = 1_000_000  # messages per bulk transaction


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=None, help="database to build or reuse")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--calls", type=int, default=5_000, help="timed history calls")
    parser.add_argument("--warmup", type=int, default=500, help="untimed calls first")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--offset-calls", type=int, default=200, help="raw SQL calls of each kind")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args()


def build(path: Path, args: argparse.Namespace) -> None:
    """Bulk-load with SQL alone (a recursive CTE), a million rows per transaction."""
    start = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn)
        conn.execute("PRAGMA synchronous = OFF")  # a half-built file is rebuilt, not recovered
        conn.execute("PRAGMA cache_size = -262144")
        encoded = passwords.hash_password("pw", n=2**4)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO users (id, name, password_hash, created_at) VALUES (?, ?, ?, 0)",
            [(u + 1, f"user{u}", encoded) for u in range(args.users)],
        )
        conn.executemany(
            "INSERT INTO rooms (id, name, created_by, created_at) VALUES (?, ?, 1, 0)",
            [(r + 1, f"room{r}") for r in range(args.rooms)],
        )
        conn.execute("COMMIT")
        for first in range(0, args.messages, CHUNK):
            last = min(first + CHUNK, args.messages) - 1
            conn.execute("BEGIN")
            conn.execute(
                """
                WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :last)
                INSERT INTO messages (id, room_id, seq, user_id, user_name, text, ts, client_id)
                SELECT i + 1, i % :rooms + 1, i / :rooms + 1, i / 7 % :users + 1,
                       'user' || (i / 7 % :users),
                       'message ' || i || ': ' || substr(:lorem, 1 + i % 50, 20 + i % 100),
                       1700000000000 + i, 'm' || i
                FROM n
                """,
                {
                    "first": first,
                    "last": last,
                    "rooms": args.rooms,
                    "users": args.users,
                    "lorem": LOREM,
                },
            )
            conn.execute("COMMIT")
            done = last + 1
            rate = done / (time.perf_counter() - start)
            print(f"  built {done:,} messages ({rate:,.0f}/s)", flush=True)
        conn.execute(
            "UPDATE rooms SET last_seq ="
            " (SELECT coalesce(max(seq), 0) FROM messages WHERE room_id = rooms.id)"
        )
        conn.execute("CREATE TABLE bench_built (messages INTEGER NOT NULL)")
        conn.execute("INSERT INTO bench_built VALUES (?)", (args.messages,))
    finally:
        conn.close()


def built_messages(path: Path) -> int | None:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT messages FROM bench_built").fetchone()
    except sqlite3.OperationalError:
        return None  # not (completely) built by this script
    finally:
        conn.close()
    return None if row is None else int(row[0])


def percentiles(samples_ns: list[int]) -> str:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return f"p50 {at(0.50):7.0f} µs   p99 {at(0.99):7.0f} µs   max {ordered[-1] / 1000:7.0f} µs"


async def time_store(path: Path, args: argparse.Namespace, pages: list[tuple[str, int]]) -> None:
    async with open_store(path, readers=args.readers) as store:
        for room, before in pages[: args.warmup]:
            await store.history(room, before, args.limit)
        samples: list[int] = []
        rows = 0
        for room, before in pages[args.warmup :]:
            start = time.perf_counter_ns()
            page, _ = await store.history(room, before, args.limit)
            samples.append(time.perf_counter_ns() - start)
            rows += len(page)
    print(f"store.history keyset   : {percentiles(samples)}   ({len(samples):,} calls)")
    if rows != len(samples) * args.limit:
        raise SystemExit(f"expected full pages, got {rows} rows over {len(samples)} calls")


def time_raw_sql(path: Path, args: argparse.Namespace, pages: list[tuple[str, int]]) -> None:
    """The same pages straight through sqlite3: keyset (what the store runs) vs naive OFFSET."""
    room_id = "(SELECT id FROM rooms WHERE name = ?)"
    columns = "id, seq, user_name, text, ts, client_id"
    keyset = (
        f"SELECT {columns} FROM messages WHERE room_id = {room_id} AND seq < ?"
        " ORDER BY seq DESC LIMIT ?"
    )
    offset = (
        f"SELECT {columns} FROM messages WHERE room_id = {room_id}"
        " ORDER BY seq DESC LIMIT ? OFFSET ?"
    )
    conn = sqlite3.connect(path)
    keyset_ns: list[int] = []
    offset_ns: list[int] = []
    try:
        for room, before in pages[: args.offset_calls]:
            last = conn.execute("SELECT last_seq FROM rooms WHERE name = ?", (room,)).fetchone()[0]
            start = time.perf_counter_ns()
            by_key = conn.execute(keyset, (room, before, args.limit + 1)).fetchall()
            keyset_ns.append(time.perf_counter_ns() - start)
            start = time.perf_counter_ns()
            by_offset = conn.execute(offset, (room, args.limit + 1, last + 1 - before)).fetchall()
            offset_ns.append(time.perf_counter_ns() - start)
            if by_key != by_offset:
                raise SystemExit(f"keyset and OFFSET disagree on {room} before {before}")
    finally:
        conn.close()
    print(f"raw SQL keyset         : {percentiles(keyset_ns)}   ({len(keyset_ns):,} calls)")
    print(f"raw SQL OFFSET (naive) : {percentiles(offset_ns)}   ({len(offset_ns):,} calls)")
    ratio = statistics.mean(offset_ns) / statistics.mean(keyset_ns)
    print(f"OFFSET / keyset (mean) : {ratio:.1f}x")


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="hibiki-bench-") as tmp:
        path = args.db or Path(tmp, "history.db")
        have = built_messages(path) if path.exists() else None
        if have is None:
            if path.exists():
                raise SystemExit(f"{path} exists but was not built by this script")
            print(f"building {path} with {args.messages:,} messages in {args.rooms} rooms")
            build(path, args)
            have = args.messages
        else:
            print(f"reusing {path} ({have:,} messages)")
        per_room = have // args.rooms
        rng = random.Random(args.seed)
        count = args.warmup + args.calls
        # before_seq uniformly over each room's history: old pages as likely as new ones.
        pages = [
            (f"room{rng.randrange(args.rooms)}", rng.randint(args.limit + 2, per_room))
            for _ in range(count)
        ]
        size = path.stat().st_size / 2**20
        print(f"database {size:,.0f} MiB, {per_room:,} messages per room, limit {args.limit}")
        trio.run(time_store, path, args, pages)
        time_raw_sql(path, args, pages)


if __name__ == "__main__":
    main()

"""Migration rate of `hibiki migrate` (messages/s, verification included) from a generated
SQLite database into a fresh PostgreSQL database, against a floor and a naive copy, one run.

The source is made fast with direct SQL inserts into a file created by the SQLite schema:
`--users` users with a token each, `--rooms` rooms every user belongs to a tenth of, and
`--messages` messages round-robin over the rooms (50-100 character texts, every other one with
a time-ordered client_id). Then, each into its own new database `hibiki_m_bench_*`:

- migrate: `storage.migrate.migrate` as the CLI runs it: schema, catalog, messages by COPY in
  chunks with their last_seq and marker updates, then the per-room verification of both sides;
- rerun: the same again with nothing new (what the last, after-stop pass costs at least);
- chunked: the first pass again into another new database with bulk mode off (every row's
  foreign keys and indexes maintained as it is copied);
- floor: the messages alone read from SQLite and COPYed in one transaction into the schema's
  table with only its primary key (no foreign keys, no secondary indexes, never rebuilt): no
  catalog, no bookkeeping, no verification;
- naive: `--naive-sample` messages by executemany INSERT, a transaction per chunk.

    python scripts/bench_migrate.py                       # 1M messages
    python scripts/bench_migrate.py --messages 100000 --json-out m.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from storage.migrate import DEFAULT_CHUNK_ROWS, migrate
from storage.postgres import migrate as apply_schema
from storage.sqlite import migrate as migrate_sqlite

TEXT = (
    "the quick brown fox jumps over the lazy dog while five wizards box quickly; "
    "pack my box with liquor!"
)
COLUMNS = "id, room_id, seq, user_id, user_name, text, ts, client_id"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--naive-sample", type=int, default=50_000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="server")
    parser.add_argument("--admin-db", default="test", help="database to CREATE/DROP from")
    parser.add_argument("--dir", help="where the SQLite file goes (default: a temp dir)")
    parser.add_argument("--json-out", help="write the figures here as JSON")
    return parser.parse_args()


def generate(path: Path, messages: int, rooms: int, users: int) -> None:
    """A hibiki SQLite database filled by direct inserts (synchronous=OFF, one transaction)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        migrate_sqlite(conn)
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        now = 1_750_000_000_000
        conn.executemany(
            "INSERT INTO users (id, name, password_hash, created_at) VALUES (?, ?, ?, ?)",
            (
                (u, f"user{u}", f"scrypt$1024$8$1$salt{u}$hash{u}", now + u)
                for u in range(1, users + 1)
            ),
        )
        conn.executemany(
            "INSERT INTO tokens (token_hash, user_id, expires_at, session_id) VALUES (?, ?, ?, ?)",
            ((uuid.uuid4().hex * 2, u, now + 86_400_000, f"{u:016x}") for u in range(1, users + 1)),
        )
        conn.executemany(
            "INSERT INTO rooms (id, name, created_by, created_at, last_seq) VALUES (?, ?, ?, ?, 0)",
            ((r, f"room{r}", 1 + r % users, now + r) for r in range(1, rooms + 1)),
        )
        conn.executemany(
            "INSERT INTO memberships (room_id, user_id, joined_at) VALUES (?, ?, ?)",
            (
                (r, u, now + r + u)
                for r in range(1, rooms + 1)
                for u in range(1, users + 1)
                if (u + r) % 10 == 0
            ),
        )
        conn.executemany(
            f"INSERT INTO messages ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            _messages(messages, rooms, users, now),
        )
        conn.execute(
            "UPDATE rooms SET last_seq = (SELECT coalesce(max(seq), 0) FROM messages"
            " WHERE room_id = rooms.id)"
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _messages(messages: int, rooms: int, users: int, now: int) -> Any:
    for i in range(messages):
        room = 1 + i % rooms
        user = 1 + (i * 7) % users
        ts = now + i // 10
        client_id = f"{ts:012x}{i:020x}" if i % 2 else None
        yield (i + 1, room, 1 + i // rooms, user, f"user{user}", TEXT[: 50 + i % 51], ts, client_id)


def timed_migrate(source: Path, target: str, chunk: int, bulk: bool = True) -> dict[str, float]:
    started = time.perf_counter()
    bulk_min_rows = {} if bulk else {"bulk_min_rows": 2**62}
    result = migrate(str(source), target, chunk_rows=chunk, **bulk_min_rows)
    seconds = time.perf_counter() - started
    if not result.ok or result.copied is None:
        sys.exit(f"verification failed: {result.verification.mismatches[:3]}")
    return {
        "seconds": seconds,
        "messages": result.copied.messages,
        "copy_seconds": result.copied.seconds,
        "verify_seconds": result.verification.seconds,
    }


def floor_copy(source: Path, target: str) -> float:
    """Messages only, read and COPYed in one transaction: what moving the rows costs at least."""
    with psycopg.connect(target, autocommit=True) as conn:
        apply_schema(conn)
        # Schema v2 has no foreign keys on messages; IF EXISTS keeps this right for either.
        for constraint in ("room_id_fkey", "user_id_fkey", "room_id_seq_key"):
            conn.execute(f"ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_{constraint}")
        conn.execute("DROP INDEX messages_by_client_id")
        sqlite = sqlite3.connect(source)
        started = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(f"COPY messages ({COLUMNS}) FROM STDIN") as copy,
        ):
            for row in sqlite.execute(f"SELECT {COLUMNS} FROM messages ORDER BY id"):
                copy.write_row(row)
        seconds = time.perf_counter() - started
        sqlite.close()
    return seconds


def naive_insert(source: Path, target: str, sample: int, chunk: int) -> float:
    """`sample` messages by executemany INSERT, one transaction per `chunk`."""
    with psycopg.connect(target, autocommit=True) as conn:
        apply_schema(conn)
        conn.execute("ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_room_id_fkey")
        conn.execute("ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_user_id_fkey")
        sqlite = sqlite3.connect(source)
        rows = sqlite.execute(
            f"SELECT {COLUMNS} FROM messages ORDER BY id LIMIT ?", (sample,)
        ).fetchall()
        sqlite.close()
        started = time.perf_counter()
        with conn.cursor() as cur:
            for start in range(0, len(rows), chunk):
                with conn.transaction():
                    cur.executemany(
                        f"INSERT INTO messages ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        rows[start : start + chunk],
                    )
        return time.perf_counter() - started


def main() -> int:
    args = parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="hibiki-migrate-bench-"))
    source = work / "source.db"
    admin = psycopg.connect(f"{args.pg}/{args.admin_db}", autocommit=True)
    names = {part: f"hibiki_m_bench_{part}_{uuid.uuid4().hex[:8]}" for part in ("m", "c", "f", "n")}
    try:
        started = time.perf_counter()
        generate(source, args.messages, args.rooms, args.users)
        made = time.perf_counter() - started
        mib = source.stat().st_size / 2**20
        print(f"generated {args.messages:,} messages in {made:.1f} s ({mib:.0f} MiB)")
        for name in names.values():
            admin.execute(f"CREATE DATABASE {name}")
        url = {part: f"{args.pg}/{name}" for part, name in names.items()}
        first = timed_migrate(source, url["m"], args.chunk)
        rerun = timed_migrate(source, url["m"], args.chunk)
        chunked = timed_migrate(source, url["c"], args.chunk, bulk=False)
        floor = floor_copy(source, url["f"])
        naive = naive_insert(source, url["n"], min(args.naive_sample, args.messages), args.chunk)
    finally:
        for name in names.values():
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    figures = report(args, first, rerun, chunked, floor, naive)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2))
    return 0


def report(
    args: argparse.Namespace,
    first: dict[str, float],
    rerun: dict[str, float],
    chunked: dict[str, float],
    floor: float,
    naive: float,
) -> dict[str, Any]:
    n = args.messages
    sample = min(args.naive_sample, n)
    figures = {
        "messages": n,
        "migrate_msg_per_s": n / first["seconds"],
        "migrate_seconds": first["seconds"],
        "copy_msg_per_s": n / first["copy_seconds"],
        "verify_msg_per_s": n / first["verify_seconds"],
        "rerun_seconds": rerun["seconds"],
        "rerun_copy_seconds": rerun["copy_seconds"],
        "rerun_verify_seconds": rerun["verify_seconds"],
        "rerun_copied": rerun["messages"],
        "chunked_copy_msg_per_s": n / chunked["copy_seconds"],
        "floor_copy_msg_per_s": n / floor,
        "naive_insert_msg_per_s": sample / naive,
    }
    rate = {key: f"{value:,.0f} messages/s" for key, value in figures.items()}
    print(f"migrate (copy + verify): {rate['migrate_msg_per_s']} ({first['seconds']:.1f} s)")
    print(f"  copy pass: {rate['copy_msg_per_s']} ({first['copy_seconds']:.1f} s)")
    print(f"  verify:    {rate['verify_msg_per_s']} ({first['verify_seconds']:.1f} s, both sides)")
    print(
        f"rerun with nothing new: {rerun['seconds']:.1f} s ({rerun['copy_seconds']:.1f} s pass,"
        f" {rerun['verify_seconds']:.1f} s verify), {rerun['messages']} copied"
    )
    print(f"copy pass without bulk mode: {rate['chunked_copy_msg_per_s']}")
    print(f"floor (bare COPY, primary key only): {rate['floor_copy_msg_per_s']}")
    print(f"naive (executemany INSERT, {sample:,} sample): {rate['naive_insert_msg_per_s']}")
    floor_rate, naive_rate = figures["floor_copy_msg_per_s"], figures["naive_insert_msg_per_s"]
    print(
        f"ratios: copy pass / floor {figures['copy_msg_per_s'] / floor_rate:.2f},"
        f" migrate / floor {figures['migrate_msg_per_s'] / floor_rate:.2f},"
        f" copy pass / naive {figures['copy_msg_per_s'] / naive_rate:.1f},"
        f" bulk / without {figures['copy_msg_per_s'] / figures['chunked_copy_msg_per_s']:.2f}"
    )
    return figures


if __name__ == "__main__":
    sys.exit(main())

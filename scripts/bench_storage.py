"""Persisted messages/s through the store's `append_batch` (`open_store` on a SQLite file or a
PostgreSQL database): group commit vs a commit per message.

Both variants run in the same process, on real files in a temporary directory (SQLite) or on
fresh databases created on `--pg-url`'s server and dropped after (PostgreSQL), with the same
durability setting (SQLite synchronous=FULL, PostgreSQL synchronous_commit=on by default: every
commit is flushed to disk before it returns), so the ratio says what group commit buys on this
machine. They alternate for `--rounds` rounds (fresh databases each time) and the medians are
reported, since other work on the machine moves single runs a lot. `--backend both` runs SQLite
and PostgreSQL in the same rounds, so their figures can be compared.

Traffic: messages go round-robin over `--rooms` rooms (so every batch touches every room, as on a
busy server), each room has `--senders` active senders, texts are 50-100 characters, and every
message carries a client_id, whose unique index is part of the measured cost. `--ids` picks its
form: `time` (default) is what clients are advised to send, 32 hex digits led by the sender's
clock in ms like a UUIDv7, each sender's clock off by a fixed random amount within
±`--clock-skew-ms`; `uuid4` is random (the worst case); `counter` is "c1", "c2", ... per sender;
`none` sends none. Ids are made when each batch is sent, outside the timed calls.

    python scripts/bench_storage.py                     # 200k messages in batches of 1000
    python scripts/bench_storage.py --ids uuid4 --rounds 5
    python scripts/bench_storage.py --backend postgresql   # on postgresql://postgres@127.0.0.1/
    python scripts/bench_storage.py --backend both --pg-url postgresql://bench@db/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

if __package__ in (None, ""):  # run as a file from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

from storage import NewMessage, Store, open_store

# 100 characters; message i takes the first 50 + i % 51 of them.
TEXT = (
    "the quick brown fox jumps over the lazy dog while five wizards box quickly; "
    "pack my box with liquor!"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="group-commit total")
    parser.add_argument("--batch", type=int, default=1000, help="messages per append_batch")
    parser.add_argument(
        "--single", type=int, default=5_000, help="messages stored with one commit each"
    )
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--senders", type=int, default=5, help="active senders per room")
    parser.add_argument(
        "--ids", default="time", choices=["time", "uuid4", "counter", "none"], help="client ids"
    )
    parser.add_argument("--clock-skew-ms", type=float, default=1000.0, help="for --ids time")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of both")
    parser.add_argument(
        "--backend", default="sqlite", choices=["sqlite", "postgresql", "both"], help="store"
    )
    parser.add_argument("--synchronous", default="FULL", choices=["OFF", "NORMAL", "FULL"])
    parser.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server's database to connect to while creating the bench databases",
    )
    parser.add_argument(
        "--synchronous-commit", default="on", choices=["on", "off", "local", "remote_write"]
    )
    parser.add_argument("--pool-size", type=int, default=4, help="PostgreSQL connections")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args()


class Traffic:
    """Makes each batch when it is sent, so time-ordered client ids carry the sending time."""

    def __init__(self, users: list[int], args: argparse.Namespace) -> None:
        self.users = users
        self.args = args
        self.rng = random.Random(args.seed)
        skew = args.clock_skew_ms
        self.clock_offsets = [self.rng.uniform(-skew, skew) for _ in users]
        self.sent = [0] * len(users)
        self.count = 0

    def batch(self, size: int) -> list[NewMessage]:
        args, rng = self.args, self.rng
        now_ms = time.time() * 1000
        messages = []
        for i in range(self.count, self.count + size):
            room = i % args.rooms
            sender = room * args.senders + (i // args.rooms) % args.senders
            self.sent[sender] += 1
            if args.ids == "time":
                stamp = int(now_ms + self.clock_offsets[sender])
                client_id: str | None = f"{stamp:012x}{rng.getrandbits(80):020x}"
            elif args.ids == "uuid4":
                client_id = uuid.uuid4().hex
            elif args.ids == "counter":
                client_id = f"c{self.sent[sender]}"
            else:
                client_id = None
            text = TEXT[: 50 + i % 51]
            messages.append(
                NewMessage(f"room{room}", self.users[sender], f"user{sender}", text, client_id)
            )
        self.count += size
        return messages


async def make_store(url: str, args: argparse.Namespace) -> tuple[Store, list[int]]:
    store = open_store(
        url,
        synchronous=args.synchronous,
        synchronous_commit=args.synchronous_commit,
        pool_size=args.pool_size,
        scrypt_n=2**4,
    )
    await store.open()
    count = args.rooms * args.senders
    users = [(await store.create_user(f"user{i}", "pw")).id for i in range(count)]
    for r in range(args.rooms):
        await store.create_room(f"room{r}", users[r * args.senders])
    return store, users


@contextlib.contextmanager
def fresh_database(backend: str, name: str, args: argparse.Namespace) -> Iterator[str]:
    """The URL of a new, empty database, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="hibiki-bench-") as tmp:
            yield f"sqlite:///{Path(tmp, name)}.db"
        return
    dbname = f"hibiki_bench_{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
        try:
            yield urllib.parse.urlsplit(args.pg_url)._replace(path=f"/{dbname}").geturl()
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def stored_count(url: str) -> int:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            count: int = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        conn.close()
        return count
    with psycopg.connect(url) as pg:
        row = pg.execute("SELECT count(*) FROM messages").fetchone()
    assert row is not None
    return int(row[0])


async def measure(url: str, args: argparse.Namespace, count: int, batch_size: int) -> float:
    """Messages/s for `count` messages stored `batch_size` per append_batch call."""
    store, users = await make_store(url, args)
    traffic = Traffic(users, args)
    elapsed = 0.0
    try:
        for start in range(0, count, batch_size):
            batch = traffic.batch(min(batch_size, count - start))
            started = time.perf_counter()
            await store.append_batch(batch)
            elapsed += time.perf_counter() - started
    finally:
        await store.aclose()
    stored = stored_count(url)
    if stored != count:
        raise SystemExit(f"{url}: {stored} messages stored, expected {count}")
    return count / elapsed


def describe(args: argparse.Namespace) -> str:
    ids = {
        "time": f"time-ordered (ms prefix, clocks within ±{args.clock_skew_ms:g} ms)",
        "uuid4": "random uuid4",
        "counter": "per-sender counters",
        "none": "none",
    }[args.ids]
    durability = []
    if args.backend in ("sqlite", "both"):
        durability.append(f"SQLite {sqlite3.sqlite_version} synchronous={args.synchronous}")
    if args.backend in ("postgresql", "both"):
        with psycopg.connect(args.pg_url) as pg:
            row = pg.execute("SHOW server_version").fetchone()
        version = row[0] if row else "?"
        durability.append(
            f"PostgreSQL {version} synchronous_commit={args.synchronous_commit},"
            f" pool {args.pool_size}"
        )
    return (
        f"{'; '.join(durability)}; {args.rooms} rooms,"
        f" {args.senders} senders per room ({args.rooms * args.senders} users), text 50-100"
        f" chars, client ids: {ids}; group commit: {args.messages:,} messages in batches of"
        f" {args.batch}; commit per message: {args.single:,} calls of 1"
    )


async def main(args: argparse.Namespace) -> None:
    print(describe(args))
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    grouped: dict[str, list[float]] = {b: [] for b in backends}
    single: dict[str, list[float]] = {b: [] for b in backends}
    for n in range(1, args.rounds + 1):
        for backend in backends:
            with fresh_database(backend, "grouped", args) as url:
                grouped[backend].append(await measure(url, args, args.messages, args.batch))
            with fresh_database(backend, "single", args) as url:
                single[backend].append(await measure(url, args, args.single, 1))
            g, s = grouped[backend][-1], single[backend][-1]
            print(
                f"round {n} {backend:<10}: group commit {g:>9,.0f} msg/s   commit per msg"
                f" {s:>7,.0f} msg/s   ratio {g / s:5.1f}x"
            )
    print(f"median of {args.rounds}:")
    for backend in backends:
        ratios = [g / s for g, s in zip(grouped[backend], single[backend], strict=True)]
        print(f"{backend}:")
        print(f"  group commit   : {statistics.median(grouped[backend]):>9,.0f} msg/s")
        print(f"  commit per msg : {statistics.median(single[backend]):>9,.0f} msg/s")
        print(
            f"  ratio          : {statistics.median(ratios):>9.1f}x  (median of per-round ratios)"
        )
    if len(backends) == 2:
        pg, lite = (statistics.median(grouped[b]) for b in ("postgresql", "sqlite"))
        print(f"group commit, PostgreSQL / SQLite: {pg / lite:.2f}x")


if __name__ == "__main__":
    trio.run(main, parse_args())

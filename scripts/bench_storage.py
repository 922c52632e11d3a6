"""Persisted messages/s through `SQLiteStore.append_batch`: group commit vs a commit per message.

Both variants run in the same process, on real files in a temporary directory, with the same
durability setting (synchronous=FULL by default: every commit is fsynced), so the ratio says what
group commit buys on this machine. Every message carries a client_id, as the web client's do, so
the dedupe lookup is part of the measured cost.

    python scripts/bench_storage.py                     # 200k messages in batches of 1000
    python scripts/bench_storage.py --batch 100 --single 2000
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

from storage import NewMessage, SQLiteStore

TEXT = "the quick brown fox jumps over the lazy dog, again and again: "


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="group-commit total")
    parser.add_argument("--batch", type=int, default=1000, help="messages per append_batch")
    parser.add_argument(
        "--single", type=int, default=5_000, help="messages stored with one commit each"
    )
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument(
        "--no-client-ids", action="store_true", help="send messages without client ids"
    )
    parser.add_argument("--synchronous", default="FULL", choices=["OFF", "NORMAL", "FULL"])
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    return parser.parse_args()


async def make_store(path: Path, args: argparse.Namespace) -> tuple[SQLiteStore, list[int]]:
    store = SQLiteStore(path, synchronous=args.synchronous, scrypt_n=2**4)
    await store.open()
    users = [(await store.create_user(f"user{i}", "pw")).id for i in range(args.users)]
    for r in range(args.rooms):
        await store.create_room(f"room{r}", users[r % len(users)])
    return store, users


def make_messages(count: int, users: list[int], args: argparse.Namespace) -> list[NewMessage]:
    """Round-robin over the rooms: each batch touches every room, as busy traffic would."""
    return [
        NewMessage(
            room=f"room{i % args.rooms}",
            user_id=users[i // 7 % len(users)],
            user_name=f"user{i // 7 % len(users)}",
            text=f"{TEXT}{i}",
            client_id=None if args.no_client_ids else f"m{i}",
        )
        for i in range(count)
    ]


def stored_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        count: int = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    conn.close()
    return count


async def measure(path: Path, args: argparse.Namespace, count: int, batch_size: int) -> float:
    """Messages/s for `count` messages stored `batch_size` per append_batch call."""
    store, users = await make_store(path, args)
    messages = make_messages(count, users, args)
    batches = [messages[i : i + batch_size] for i in range(0, count, batch_size)]
    try:
        start = time.perf_counter()
        for batch in batches:
            await store.append_batch(batch)
        elapsed = time.perf_counter() - start
    finally:
        await store.aclose()
    stored = stored_count(path)
    if stored != count:
        raise SystemExit(f"{path.name}: {stored} messages stored, expected {count}")
    return count / elapsed


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="hibiki-bench-") as tmp:
        ids = "without" if args.no_client_ids else "with"
        print(
            f"files in {tmp}: synchronous={args.synchronous}, {args.rooms} rooms,"
            f" {args.users} users, messages {ids} client ids"
        )
        grouped = await measure(Path(tmp, "grouped.db"), args, args.messages, args.batch)
        done = f"{args.messages:,} in batches of {args.batch}"
        print(f"group commit   : {grouped:>9,.0f} msg/s  ({done})")
        single = await measure(Path(tmp, "single.db"), args, args.single, 1)
        print(f"commit per msg : {single:>9,.0f} msg/s  ({args.single:,} calls of 1 message)")
        print(f"ratio          : {grouped / single:>9.1f}x")


if __name__ == "__main__":
    trio.run(main, parse_args())

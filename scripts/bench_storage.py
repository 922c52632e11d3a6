"""Persisted messages/s through `SQLiteStore.append_batch`: group commit vs a commit per message.

Both variants run in the same process, on real files in a temporary directory, with the same
durability setting (synchronous=FULL by default: every commit is fsynced), so the ratio says what
group commit buys on this machine.

Traffic: messages go round-robin over `--rooms` rooms (so every batch touches every room, as on a
busy server), each room has `--senders` active senders, and every message carries a client_id
(a per-sender counter) unless `--no-client-ids`: its unique index is part of the measured cost.

    python scripts/bench_storage.py                     # 200k messages in batches of 1000
    python scripts/bench_storage.py --batch 100 --single 2000
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
import uuid
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
    parser.add_argument("--senders", type=int, default=5, help="active senders per room")
    ids = parser.add_mutually_exclusive_group()
    ids.add_argument("--no-client-ids", action="store_true", help="messages without client_id")
    ids.add_argument(
        "--random-client-ids", action="store_true", help="uuid4 client ids (worst case)"
    )
    parser.add_argument("--synchronous", default="FULL", choices=["OFF", "NORMAL", "FULL"])
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    return parser.parse_args()


async def make_store(path: Path, args: argparse.Namespace) -> tuple[SQLiteStore, list[int]]:
    store = SQLiteStore(path, synchronous=args.synchronous, scrypt_n=2**4)
    await store.open()
    count = args.rooms * args.senders
    users = [(await store.create_user(f"user{i}", "pw")).id for i in range(count)]
    for r in range(args.rooms):
        await store.create_room(f"room{r}", users[r * args.senders])
    return store, users


def make_messages(count: int, users: list[int], args: argparse.Namespace) -> list[NewMessage]:
    messages = []
    sent = [0] * len(users)
    for i in range(count):
        room = i % args.rooms
        sender = room * args.senders + (i // args.rooms) % args.senders
        sent[sender] += 1
        if args.no_client_ids:
            client_id = None
        elif args.random_client_ids:
            client_id = uuid.uuid4().hex
        else:
            client_id = f"c{sent[sender]}"
        messages.append(
            NewMessage(f"room{room}", users[sender], f"user{sender}", f"{TEXT}{i}", client_id)
        )
    return messages


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
        ids = "none" if args.no_client_ids else "uuid4" if args.random_client_ids else "counters"
        print(
            f"files in {tmp}: synchronous={args.synchronous}, {args.rooms} rooms,"
            f" {args.senders} senders per room, client ids: {ids}"
        )
        grouped = await measure(Path(tmp, "grouped.db"), args, args.messages, args.batch)
        done = f"{args.messages:,} in batches of {args.batch}"
        print(f"group commit   : {grouped:>9,.0f} msg/s  ({done})")
        single = await measure(Path(tmp, "single.db"), args, args.single, 1)
        print(f"commit per msg : {single:>9,.0f} msg/s  ({args.single:,} calls of 1 message)")
        print(f"ratio          : {grouped / single:>9.1f}x")


if __name__ == "__main__":
    trio.run(main, parse_args())

"""Persisted messages/s through the store's `append_batch` (`open_store` on a SQLite file): group
commit vs a commit per message.

Both variants run in the same process, on real files in a temporary directory, with the same
durability setting (synchronous=FULL by default: every commit is fsynced), so the ratio says what
group commit buys on this machine. They alternate for `--rounds` rounds (fresh files each time)
and the medians are reported, since other work on the machine moves single runs a lot.

Traffic: messages go round-robin over `--rooms` rooms (so every batch touches every room, as on a
busy server), each room has `--senders` active senders, texts are 50-100 characters, and every
message carries a client_id, whose unique index is part of the measured cost. `--ids` picks its
form: `time` (default) is what clients are advised to send, 32 hex digits led by the sender's
clock in ms like a UUIDv7, each sender's clock off by a fixed random amount within
±`--clock-skew-ms`; `uuid4` is random (the worst case); `counter` is "c1", "c2", ... per sender;
`none` sends none. Ids are made when each batch is sent, outside the timed calls.

    python scripts/bench_storage.py                     # 200k messages in batches of 1000
    python scripts/bench_storage.py --ids uuid4 --rounds 5
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

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
    parser.add_argument("--synchronous", default="FULL", choices=["OFF", "NORMAL", "FULL"])
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


async def make_store(path: Path, args: argparse.Namespace) -> tuple[Store, list[int]]:
    store = open_store(path, synchronous=args.synchronous, scrypt_n=2**4)
    await store.open()
    count = args.rooms * args.senders
    users = [(await store.create_user(f"user{i}", "pw")).id for i in range(count)]
    for r in range(args.rooms):
        await store.create_room(f"room{r}", users[r * args.senders])
    return store, users


def stored_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        count: int = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    conn.close()
    return count


async def measure(path: Path, args: argparse.Namespace, count: int, batch_size: int) -> float:
    """Messages/s for `count` messages stored `batch_size` per append_batch call."""
    store, users = await make_store(path, args)
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
    stored = stored_count(path)
    if stored != count:
        raise SystemExit(f"{path.name}: {stored} messages stored, expected {count}")
    return count / elapsed


def describe(args: argparse.Namespace) -> str:
    ids = {
        "time": f"time-ordered (ms prefix, clocks within ±{args.clock_skew_ms:g} ms)",
        "uuid4": "random uuid4",
        "counter": "per-sender counters",
        "none": "none",
    }[args.ids]
    return (
        f"synchronous={args.synchronous}, SQLite {sqlite3.sqlite_version}; {args.rooms} rooms,"
        f" {args.senders} senders per room ({args.rooms * args.senders} users), text 50-100"
        f" chars, client ids: {ids}; group commit: {args.messages:,} messages in batches of"
        f" {args.batch}; commit per message: {args.single:,} calls of 1"
    )


async def main(args: argparse.Namespace) -> None:
    print(describe(args))
    grouped: list[float] = []
    single: list[float] = []
    for n in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="hibiki-bench-") as tmp:
            grouped.append(await measure(Path(tmp, "grouped.db"), args, args.messages, args.batch))
            single.append(await measure(Path(tmp, "single.db"), args, args.single, 1))
        print(
            f"round {n}: group commit {grouped[-1]:>9,.0f} msg/s   commit per msg"
            f" {single[-1]:>7,.0f} msg/s   ratio {grouped[-1] / single[-1]:5.1f}x"
        )
    ratios = [g / s for g, s in zip(grouped, single, strict=True)]
    print(f"median of {args.rounds}:")
    print(f"group commit   : {statistics.median(grouped):>9,.0f} msg/s")
    print(f"commit per msg : {statistics.median(single):>9,.0f} msg/s")
    print(f"ratio          : {statistics.median(ratios):>9.1f}x  (median of per-round ratios)")


if __name__ == "__main__":
    trio.run(main, parse_args())

"""The event stream's append rate beside the message commit rate, in the same run.

A real `MessageWriter` group-commits `--messages` sends over `--rooms` rooms into a SQLite file
(synchronous=FULL) with an `EventAppender` as its after-commit sink, appending to the machine's
Redis (a namespace of its own, deleted after). Reported: messages committed per second (first
submit to last commit), events appended per second (first submit to the last XADD round whose
cursor is stored), and their ratio: 1.0 means the stream keeps up with the commits. A second
run with no sink gives the commit rate without the stream, so the cost of the stream to the
commit path is the ratio of the two commit rates.

    python scripts/bench_events.py                    # 50k messages, 100 rooms
    python scripts/bench_events.py --messages 200000 --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path

import coredis
import trio

from server.events import EventAppender
from server.persist.writer import MessageWriter, PendingSend
from storage import CompositeStore, NewMessage, open_store


class _NoBus:
    def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        pass


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    return parser.parse_args()


async def _setup(path: Path, rooms: int) -> tuple[CompositeStore, int]:
    store = open_store(str(path), scrypt_n=2)
    await store.open()
    user = await store.create_user("bench", "bench-bench")
    for r in range(rooms):
        await store.create_room(f"room{r}", user.id)
    return store, user.id


async def _run(args: argparse.Namespace, path: Path, stream: bool) -> tuple[float, float]:
    """(commit seconds, append seconds); append seconds 0 without the stream."""
    store, user = await _setup(path, args.rooms)
    namespace = "bench" + secrets.token_hex(4)
    appender = EventAppender(
        args.redis,
        store.events,
        namespace=namespace,
        partitions=args.partitions,
        maxlen=args.messages * 2,
        append_timeout=10.0,
    )
    sinks = [appender] if stream else []
    writer = MessageWriter(store, _NoBus(), queue_size=10_000, max_batch=1000, after_commit=sinks)
    async with trio.open_nursery() as nursery:
        if stream:
            await nursery.start(appender.run)
        await nursery.start(writer.run)
        started = time.perf_counter()
        for i in range(args.messages):
            text = f"message {i} " + "x" * 60
            new = NewMessage(f"room{i % args.rooms}", user, "bench", text, f"c{i}")
            await writer.submit(PendingSend(new, None, None))
        writer.close_input()
        await writer.finished.wait()
        committed = time.perf_counter() - started
        appended = 0.0
        if stream:
            while appender.appended < args.messages:  # noqa: ASYNC110 (a benchmark's end check)
                await trio.sleep(0.001)
            appended = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    if stream:
        await _clean(args.redis, namespace)
    await store.aclose()
    return committed, appended


async def _clean(url: str, namespace: str) -> None:
    client: coredis.Redis[bytes] = coredis.Redis.from_url(url, decode_responses=False)
    async with client:
        keys = [k async for k in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(keys)


async def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain, _ = await _run(args, Path(tmp) / "plain.db", stream=False)
        committed, appended = await _run(args, Path(tmp) / "stream.db", stream=True)
    n = args.messages
    print(f"{n} messages, {args.rooms} rooms, {args.partitions} partitions, SQLite FULL")
    print(f"commit rate, no stream:   {n / plain:10,.0f} messages/s")
    print(f"commit rate, with stream: {n / committed:10,.0f} messages/s")
    print(f"append rate (same run):   {n / appended:10,.0f} events/s")
    print(f"append / commit (same run): {committed / appended:.2f}")
    print(f"commit with / without stream: {plain / committed:.2f}")


if __name__ == "__main__":
    trio.run(main)

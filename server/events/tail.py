"""`hibiki events tail [--group G]` and `hibiki events index --db FILE`: follow the streams with
a consumer group, printing each new (room, seq) as a JSON line, or indexing it for search."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from collections.abc import Sequence

import coredis
import trio

from server.config import Config
from server.config_file import load_config
from server.events.consumer import EventConsumer
from server.events.search_index import SearchIndex
from server.events.stream import Deduper, StreamEvent


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="hibiki events", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("tail", "index"):
        sub = commands.add_parser(name)
        sub.add_argument("--config", dest="config_path", metavar="FILE")
        sub.add_argument("--group", default="tail" if name == "tail" else "search")
        sub.add_argument("--consumer", default=f"{socket.gethostname()}-{os.getpid()}")
        sub.add_argument("--claim-idle", type=float, default=30.0, help="seconds")
        if name == "index":
            sub.add_argument("--db", required=True, help="the search index's SQLite file")
    args = parser.parse_args(argv)
    config = load_config(args.config_path, dict(os.environ)).config
    if not config.events_url:
        print("hibiki events: no events_redis_url (or redis_url) configured", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(_follow, config, args)
    return 0


async def _follow(config: Config, args: argparse.Namespace) -> None:
    client: coredis.Redis[bytes] = coredis.Redis.from_url(config.events_url, decode_responses=False)
    consumer = EventConsumer(
        client,
        namespace=config.bus.bus_namespace,
        partitions=config.events.stream_partitions,
        group=args.group,
        consumer=args.consumer,
        claim_idle=args.claim_idle,
    )
    async with client:
        if args.command == "index":
            index = SearchIndex(args.db)
            try:
                await consumer.run(index.add)
            finally:
                index.close()
        seen = Deduper()

        async def show(events: Sequence[StreamEvent]) -> None:
            for item in events:
                if seen.fresh(item.event):
                    sys.stdout.write(item.raw.decode() + "\n")
            sys.stdout.flush()

        await consumer.run(show)

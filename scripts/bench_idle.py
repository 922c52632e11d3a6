"""Memory per idle connection: C concurrent, joined, idle connections to hibiki and to the peers
(`websockets` broadcast server, python-socketio on uvicorn); reports the server's RSS growth per
connection in KiB.

Each server is started fresh; a warm-up batch of connections is made first so that one-time
allocations are not charged to the connections, then the rest, then the RSS is read after a
short settle. Connections come from several 127.0.0.x source addresses when C is large.

    python scripts/bench_idle.py                          # 20,000 connections per server
    python scripts/bench_idle.py --connections 5000 --servers hibiki,websockets

The fd limit is raised by the script for itself, the servers and the load workers it starts
(as root the hard limit too; otherwise run `ulimit -n 65536` first if the hard limit is lower).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _benchservers import ServerProcess, start_server
from _loadplan import Target, Workload, make_plan, more_receivers, source_addresses
from _loadrun import LoadSession, SessionOptions
from _loadstats import raise_fd_limit, rss_kib
from _loadworkers import node_binary

SERVERS = ("hibiki", "websockets", "socketio")
ROOT = Path(__file__).resolve().parents[1]


async def measure(server: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    target = Target.parse(server.url)
    warmup = min(args.warmup, args.connections)
    plan = await make_plan(server.kind, target, Workload(warmup, args.rooms, 0))
    options = SessionOptions(workers=args.workers, server_pid=server.pid, progress=False)
    async with LoadSession(target, plan, options) as session:
        await trio.sleep(args.settle)
        before = rss_kib(server.pid)
        t0 = trio.current_time()
        addresses = source_addresses(args.connections, args.sources)
        await session.add_receivers(more_receivers(plan, args.connections - warmup, addresses))
        connect_s = trio.current_time() - t0
        await trio.sleep(args.settle)
        after = rss_kib(server.pid)
        replies = await session.ask_all("stats")
        held = sum(r["open"] for r in replies.values())
    added = held - warmup
    return {
        "server": server.kind,
        "connections": held,
        "failed": session.connect_failed,
        "connect_s": round(connect_s, 1),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / added, 2) if added > 0 else None,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--rooms", type=int, default=20, help="connections are spread evenly")
    parser.add_argument("--warmup", type=int, default=200, help="connections before the baseline")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sources", type=int, help="127.0.0.x source addresses (default auto)")
    parser.add_argument("--out", type=Path, help="JSON file (default bench-results/idle-TIME.json)")
    args = parser.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    for name in args.servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if node_binary() is None:
        print("bench_idle: node (Node.js >= 18) is required", file=sys.stderr)
        return 2
    limit = raise_fd_limit()
    if limit < args.connections + 100:
        print(
            f"bench_idle: the fd limit is {limit} and could not be raised (the hard limit needs "
            "root with CAP_SYS_RESOURCE: `ulimit -Hn`); use --connections below it",
            file=sys.stderr,
        )
        return 2
    results = []
    for kind in args.servers:
        with tempfile.TemporaryDirectory(prefix=f"idle-{kind}-") as tmp:
            server = start_server(kind, Path(tmp))
            try:
                result = trio.run(measure, server, args)
            finally:
                server.stop()
        print(
            f"{kind:>10}: {result['connections']} connections held "
            f"({result['failed']} failed, {result['connect_s']} s), "
            f"{result['kib_per_connection']} KiB RSS per connection",
            file=sys.stderr,
        )
        results.append(result)
    out = args.out or ROOT / "bench-results" / time.strftime("idle-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print("| server | connections | KiB RSS per connection |")
    print("| --- | ---: | ---: |")
    for r in results:
        print(f"| {r['server']} | {r['connections']:,} | {r['kib_per_connection']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Memory per idle connection under `hibiki serve --workers W --redis URL`: C joined, idle
connections on one port shared by W worker processes (SO_REUSEPORT), a private redis-server as
their bus, one fresh SQLite file; reports the RSS growth of every process of the server
(supervisor and workers, summed) per connection, each process's descriptors and connections,
and checks that every connection is live: one message to each room must reach every receiver,
on every worker (all but the sender's worker get it through Redis).

The soft fd limit is set to --fd-limit (20,000: this machine's hard limit) for the script and
everything it starts: each server process and each Node load worker must stay under it, so the
receivers are spread over enough load workers and 127.0.0.x source addresses (each source's
ephemeral ports are finite). With --single, the same per-process number of connections is
then measured on one plain `hibiki serve` process for comparison, in the same run.

    python scripts/bench_idle_workers.py                           # 50,000 over 3 workers
    python scripts/bench_idle_workers.py --connections 60 --rooms 3 --single 0   # smoke size
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _benchprocs import cap_fd_limit, child_pids, connections_by_process, fd_count
from _benchredis import RedisProcess, redis_server_binary, start_redis
from _benchservers import ServerProcess, start_server
from _loadplan import CONNS_PER_SOURCE, Target, Workload, make_plan, more_receivers
from _loadrun import LoadSession, Phase, SessionOptions
from _loadstats import rss_kib
from _loadworkers import node_binary

ROOT = Path(__file__).resolve().parents[1]
PER_LOADER = 12_500  # receivers per Node load worker: well under its 20,000 descriptors
FD_HEADROOM = 500  # listener, epoll, Redis, SQLite, pipes: what a process holds besides peers
BATCH = 4_000  # receivers connected per round over all load workers
TARGET_KIB = 12.0  # issue #11: <= 12 KiB RSS per joined idle connection with --workers 3


def rss_by_pid(pids: list[int]) -> dict[int, int]:
    return {pid: rss_kib(pid) for pid in pids}


def server_processes(server: ServerProcess, workers: int) -> tuple[list[int], list[int]]:
    """(all pids counted, worker pids): the supervisor and its workers, or the one process."""
    if workers <= 1:
        return [server.pid], [server.pid]
    children = child_pids(server.pid)
    if len(children) != workers:
        raise RuntimeError(f"supervisor {server.pid} has children {children}, not {workers}")
    return [server.pid, *children], children


def source_list(connections: int, wanted: int | None) -> list[str | None]:
    """127.0.0.2.. source addresses (127.0.0.1 is the sender's and the setup's)."""
    count = wanted or max(1, math.ceil(connections / CONNS_PER_SOURCE))
    if count > 253:
        raise ValueError("at most 253 source addresses (127.0.0.2 .. 127.0.0.254)")
    return [f"127.0.0.{2 + i}" for i in range(count)]


async def check_live(session: LoadSession, rooms: int, held: int) -> dict[str, Any]:
    """One message to each room from the sender; what reached the `held` receivers."""
    phase = Phase("closed", window=1, messages=rooms, duration=120.0, drain=60.0)
    report = await session.run_phase(phase)
    errors = report["errors"]
    return {
        "messages": report["sent"],
        "deliveries": report["deliveries"],
        # Every receiver is in one room: each one held gets exactly one message (the plan's
        # count also has the receivers whose connection failed).
        "expected_deliveries": held,
        "missing_deliveries": held - report["deliveries"],
        "closed": errors["closed"],
        "error_frames": errors["error_frames"],
        "latency_ms": report["latency_ms"],
    }


async def measure(
    server: ServerProcess, args: argparse.Namespace, connections: int, workers: int
) -> dict[str, Any]:
    """Warm up, read RSS, connect the rest, settle, read RSS and descriptors, check liveness."""
    pids, worker_pids = server_processes(server, workers)
    target = Target.parse(server.url)
    warmup = min(args.warmup, connections)
    plan = await make_plan("hibiki", target, Workload(warmup, args.rooms, 1), sources=1)
    loaders = args.loaders or max(1, math.ceil(connections / PER_LOADER))
    options = SessionOptions(workers=loaders, server_pids=tuple(pids), progress=False)
    async with LoadSession(target, plan, options) as session:
        await trio.sleep(args.settle)
        before = rss_by_pid(pids)
        t0 = trio.current_time()
        addresses = source_list(connections, args.sources)
        # In batches: each connect command's deadline grows with its size, but a busy machine
        # can connect far slower than that allows for 12,500 at once.
        for _ in range(warmup, connections, BATCH):
            count = min(BATCH, connections - len(plan.receivers))
            await session.add_receivers(more_receivers(plan, count, list(addresses)))
        connect_s = trio.current_time() - t0
        await trio.sleep(args.settle)
        after = rss_by_pid(pids)
        fds = {pid: fd_count(pid) for pid in pids}
        held_by = connections_by_process(worker_pids, target.port)
        loader_fds = {w.name: fd_count(w.pid) for w in session.receivers}
        replies = await session.ask_all("stats")
        held = sum(r["open"] for name, r in replies.items() if name.startswith("receivers"))
        live = await check_live(session, args.rooms, held)
    return summarise(
        workers=workers,
        held=held,
        warmup=warmup,
        pids=pids,
        rss=(before, after),
        fds=fds,
        held_by=held_by,
        extra={
            "failed": session.connect_failed,
            "connect_errors": session.connect_errors[:10],
            "connect_s": round(connect_s, 1),
            "sources": addresses,
            "loaders": loaders,
            "loader_fds": loader_fds,
            "live": live,
        },
    )


def summarise(
    *,
    workers: int,
    held: int,
    warmup: int,
    pids: list[int],
    rss: tuple[dict[int, int], dict[int, int]],
    fds: dict[int, int],
    held_by: dict[int, int],
    extra: dict[str, Any],
) -> dict[str, Any]:
    before, after = rss
    added = held - warmup
    grown = sum(after.values()) - sum(before.values())
    processes: list[dict[str, Any]] = [
        {
            "pid": pid,
            "role": "supervisor" if workers > 1 and i == 0 else "worker",
            "rss_before_kib": before[pid],
            "rss_after_kib": after[pid],
            "fds": fds[pid],
            "connections": held_by.get(pid),
        }
        for i, pid in enumerate(pids)
    ]
    live = extra["live"]
    # Every receiver got every message of its room, and every worker holds receivers: so the
    # message reached connections on every worker (through Redis on all but the sender's).
    everywhere = live["missing_deliveries"] == 0 and all(
        (p["connections"] or 0) > 0 for p in processes if p["role"] == "worker"
    )
    return {
        "server": f"hibiki --workers {workers}" if workers > 1 else "hibiki (one process)",
        "workers": workers,
        "supervisor_counted": workers > 1,
        "connections": held,
        "warmup": warmup,
        "rss_before_kib": sum(before.values()),
        "rss_after_kib": sum(after.values()),
        "kib_per_connection": round(grown / added, 2) if added > 0 else None,
        "max_fds": max(fds.values()),
        "live_on_every_worker": everywhere,
        "processes": processes,
        **extra,
    }


def run_one(args: argparse.Namespace, connections: int, workers: int) -> dict[str, Any]:
    """Start a fresh server (and for several workers its private Redis), measure, stop."""
    with tempfile.TemporaryDirectory(prefix=f"idle-w{workers}-") as tmp:
        redis: RedisProcess | None = None
        extra: tuple[str, ...] = ()
        if workers > 1:
            redis = start_redis(Path(tmp) / "redis")
            extra = ("--workers", str(workers))
        # A busy machine can take more than the default 10 s to answer a hello when hundreds
        # are queued: the bench measures holding connections, not the hello latency.
        extra += ("--hello-timeout", str(args.hello_timeout))
        # Likewise the heartbeat: a starved Node load worker answering 12,500 pings at once
        # can take over the default 20 s (one run lost 29,215 connections so on a load-14 host).
        extra += ("--heartbeat-deadline", str(args.heartbeat_deadline))
        try:
            server = start_server(
                "hibiki",
                Path(tmp) / "server",
                redis_url=redis.url(args.redis_db) if redis else None,
                extra_args=extra,
                timeout=60,
            )
            try:
                return trio.run(measure, server, args, connections, workers)
            finally:
                server.stop()
        finally:
            if redis is not None:
                redis.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=3, help="hibiki worker processes")
    parser.add_argument("--rooms", type=int, default=20, help="receivers are spread evenly")
    parser.add_argument("--warmup", type=int, default=300, help="connections before the baseline")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    parser.add_argument("--loaders", type=int, help=f"Node load workers (default C/{PER_LOADER})")
    parser.add_argument("--sources", type=int, help="127.0.0.x source addresses (default auto)")
    parser.add_argument("--fd-limit", type=int, default=20_000, help="soft RLIMIT_NOFILE")
    parser.add_argument("--hello-timeout", type=float, default=120.0, help="server's, seconds")
    parser.add_argument(
        "--heartbeat-deadline", type=float, default=120.0, help="server's pong deadline, seconds"
    )
    parser.add_argument("--redis-db", type=int, default=0, help="database in the private Redis")
    parser.add_argument(
        "--single",
        type=int,
        help="connections for the one-process comparison (default C/W; 0: skip it)",
    )
    parser.add_argument("--out", type=Path, help="JSON file (default bench-results/idle-workers-*)")
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers: at least 2 (one process is bench_idle.py's case)")
    if args.single is None:
        args.single = args.connections // args.workers
    return args


def too_many(args: argparse.Namespace, limit: int) -> str | None:
    """Why this run would cross the fd limit somewhere, or None."""
    per_worker = math.ceil(args.connections / args.workers * 1.1)  # the kernel's spread is uneven
    per_loader = math.ceil(args.connections / (args.loaders or 1)) if args.loaders else PER_LOADER
    for what, need in (
        ("a server worker", per_worker),
        ("a load worker", per_loader),
        ("the one process", args.single),
    ):
        if need + FD_HEADROOM > limit:
            return f"{what} would need about {need + FD_HEADROOM} fds, above the limit {limit}"
    return None


def print_table(results: list[dict[str, Any]]) -> None:
    print("| server | connections | KiB RSS per connection | max fds per process | live |")
    print("| --- | ---: | ---: | ---: | --- |")
    for r in results:
        live = r["live"]
        ok = f"{live['deliveries']:,}/{live['expected_deliveries']:,}"
        print(
            f"| {r['server']} | {r['connections']:,} | {r['kib_per_connection']} "
            f"| {r['max_fds']:,} | {ok} |"
        )
    for r in results:
        spread = ", ".join(
            f"{p['role']} {p['pid']}: {p['connections']} conns, {p['fds']} fds, "
            f"{p['rss_before_kib']}->{p['rss_after_kib']} KiB"
            for p in r["processes"]
        )
        print(f"- {r['server']}: {spread}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if node_binary() is None or redis_server_binary() is None:
        print("bench_idle_workers: node and redis-server are required", file=sys.stderr)
        return 2
    limit = cap_fd_limit(args.fd_limit)
    if why := too_many(args, limit):
        print(f"bench_idle_workers: {why}", file=sys.stderr)
        return 2
    started = time.monotonic()
    runs = [(args.connections, args.workers)] + ([(args.single, 1)] if args.single else [])
    results = []
    for connections, workers in runs:
        r = run_one(args, connections, workers)
        results.append(r)
        print(
            f"{r['server']}: {r['connections']} held ({r['failed']} failed, {r['connect_s']} s), "
            f"{r['kib_per_connection']} KiB RSS per connection (target {TARGET_KIB})",
            file=sys.stderr,
        )
    out = args.out or ROOT / "bench-results" / time.strftime("idle-workers-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(["scripts/bench_idle_workers.py", *(argv or sys.argv[1:])]),
        "fd_limit": limit,
        "target_kib_per_connection": TARGET_KIB,
        "elapsed_s": round(time.monotonic() - started, 1),
        "results": results,
    }
    out.write_text(json.dumps(report, indent=1) + "\n")
    print_table(results)
    failed = any(r["live"]["missing_deliveries"] or r["failed"] for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

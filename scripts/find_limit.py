"""Capacity finder: ramps connections and offered message rate against a running server until
p99 latency or errors cross a threshold, and prints the single-server limit.

At each connection level (start, x2, x2, ... up to --max-connections) the offered rate (open
loop) grows by --rate-factor per step of --step seconds until a step fails: p99 send->receive
above --p99-ms, any error or closed connection, a delivery still missing after the drain, or the
senders unable to offer the rate. One bisection step refines the last passing rate. The ramp
of connections stops when even the level's first rate fails or connections are refused.

    python scripts/find_limit.py --url ws://127.0.0.1:8080 --server-pid PID
    python scripts/find_limit.py --url ws://127.0.0.1:8080 --rooms 100 --max-connections 20000

The limit printed: the most connections held within the latency bound, and the highest
messages/s and deliveries/s sustained within it (with the connection count where it was).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _loadplan import (
    PROTOCOLS,
    PlanError,
    Target,
    Workload,
    make_plan,
    more_receivers,
    source_addresses,
)
from _loadrun import LoadSession, Phase, SessionOptions
from _loadstats import raise_fd_limit
from _loadworkers import WorkerError, node_binary


def passed(report: dict[str, Any], args: argparse.Namespace) -> tuple[bool, str]:
    errors = report["errors"]
    p99 = report["latency_ms"]["p99"]
    offered = report["phase"]["rate"]
    if errors["error_frames"] or errors["closed"]:
        return False, f"{errors['error_frames']} error frames, {errors['closed']} closed"
    if report["missing_deliveries"] > 0:
        return False, f"{report['missing_deliveries']} deliveries missing after the drain"
    if errors["skipped_sends"] or report["messages_per_s"] < 0.95 * offered:
        return False, "the senders could not offer the rate"
    if p99 is None or p99 > args.p99_ms:
        return False, f"p99 {p99} ms > {args.p99_ms} ms"
    return True, "ok"


async def step(session: LoadSession, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    report = await session.run_phase(
        Phase("open", rate=rate, duration=args.step, drain=max(args.step, 5.0))
    )
    ok, why = passed(report, args)
    report["passed"], report["why"] = ok, why
    print(
        f"  {report['receivers']:>7} conns  {rate:>10.1f} msg/s offered  "
        f"{report['deliveries_per_s']:>12,.0f} deliveries/s  "
        f"p99 {report['latency_ms']['p99']} ms  server cpu {report['server_cpu_util']}  "
        f"client cpu {report['client_cpu_util']}  -> {why}",
        file=sys.stderr,
        flush=True,
    )
    return report


async def ramp_rate(
    session: LoadSession, start: float, args: argparse.Namespace
) -> dict[str, Any] | None:
    """The best passing step at this connection count, or None if the first step fails."""
    best: dict[str, Any] | None = None
    rate = start
    failed_at = None
    while rate <= args.max_rate:
        report = await step(session, rate, args)
        if not report["passed"]:
            failed_at = rate
            break
        best = report
        rate *= args.rate_factor
    if best is not None and failed_at is not None:
        middle = math.sqrt(best["phase"]["rate"] * failed_at)
        report = await step(session, middle, args)
        if report["passed"]:
            best = report
    return best


async def find(args: argparse.Namespace) -> dict[str, Any]:
    target = Target.parse(args.url)
    conns = args.start_connections
    plan = await make_plan(args.protocol, target, Workload(conns, args.rooms, args.senders))
    addresses = source_addresses(args.max_connections, args.sources)
    options = SessionOptions(
        workers=args.workers,
        sample_every=args.sample_every,
        server_pid=args.server_pid,
        progress=False,
    )
    levels: list[dict[str, Any]] = []
    deadline = trio.current_time() + args.max_time
    async with LoadSession(target, plan, options) as session:
        start_rate = args.start_rate
        while True:
            print(f"level: {conns} connections", file=sys.stderr, flush=True)
            best = await ramp_rate(session, start_rate, args)
            levels.append({"connections": conns, "best": best})
            if best is None or conns >= args.max_connections:
                break
            if trio.current_time() > deadline:
                print("max time reached", file=sys.stderr)
                break
            more = min(conns * args.conn_factor, args.max_connections) - conns
            failed_before = session.connect_failed
            await session.add_receivers(more_receivers(plan, more, addresses))
            if session.connect_failed > failed_before:
                print("connections refused: stopping the ramp", file=sys.stderr)
                levels.append({"connections": conns + more, "best": None})
                break
            # Same deliveries/s as the last level's best, one factor lower, as the next start.
            same = best["phase"]["rate"] * conns / (conns + more) / args.rate_factor
            start_rate = max(args.start_rate, same)
            conns += more
    return summarise(levels)


def summarise(levels: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [lv for lv in levels if lv["best"] is not None]
    top = max(ok, key=lambda lv: lv["best"]["deliveries_per_s"], default=None)
    top_msgs = max(ok, key=lambda lv: lv["best"]["messages_per_s"], default=None)
    return {
        "max_connections": max((lv["connections"] for lv in ok), default=0),
        "max_messages_per_s": top_msgs["best"]["messages_per_s"] if top_msgs else None,
        "max_messages_at_connections": top_msgs["connections"] if top_msgs else None,
        "max_deliveries_per_s": top["best"]["deliveries_per_s"] if top else None,
        "max_deliveries_at_connections": top["connections"] if top else None,
        "levels": [
            {
                "connections": lv["connections"],
                "messages_per_s": lv["best"]["messages_per_s"] if lv["best"] else None,
                "deliveries_per_s": lv["best"]["deliveries_per_s"] if lv["best"] else None,
                "p99_ms": lv["best"]["latency_ms"]["p99"] if lv["best"] else None,
                "server_cpu_util": lv["best"]["server_cpu_util"] if lv["best"] else None,
                "client_limited": lv["best"]["client_limited"] if lv["best"] else None,
            }
            for lv in levels
        ],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT (loopback only)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="hibiki")
    parser.add_argument("--server-pid", type=int, help="to report the server's CPU")
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument("--senders", type=int, default=1)
    parser.add_argument("--start-connections", type=int, default=1000)
    parser.add_argument("--max-connections", type=int, default=16_000)
    parser.add_argument("--conn-factor", type=int, default=2)
    parser.add_argument("--start-rate", type=float, default=10.0, help="messages/s")
    parser.add_argument("--rate-factor", type=float, default=2.0)
    parser.add_argument("--max-rate", type=float, default=1e6)
    parser.add_argument("--step", type=float, default=5.0, help="seconds per step")
    parser.add_argument("--p99-ms", type=float, default=50.0, help="latency bound")
    parser.add_argument("--sample-every", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sources", type=int)
    parser.add_argument("--max-time", type=float, default=900.0, help="stop ramping after this")
    parser.add_argument("--json-out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if node_binary() is None:
        print("find_limit: node (Node.js >= 18) is required", file=sys.stderr)
        return 2
    raise_fd_limit()
    try:
        result = trio.run(find, args)
    except (PlanError, WorkerError, ConnectionError) as exc:
        print(f"find_limit: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(text)
    print(
        f"single-server limit (p99 <= {args.p99_ms} ms, no errors): "
        f"{result['max_connections']} connections; "
        f"{result['max_messages_per_s']} messages/s "
        f"(at {result['max_messages_at_connections']} connections); "
        f"{result['max_deliveries_per_s']} deliveries/s "
        f"(at {result['max_deliveries_at_connections']} connections)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

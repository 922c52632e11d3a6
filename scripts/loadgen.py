"""Load generator: N receiving connections and S senders against a running server on loopback.

Speaks hibiki's protocol (register, create/join rooms over HTTP, then hello and send over the
WebSocket) or a benchmark peer's dialect (`--protocol websockets|socketio`). The sockets live in
Node.js worker processes (scripts/loadgen_node/: raw `net` sockets, a minimal frame parser that
counts message frames without JSON-parsing them); this process plans, drives and measures.

    # closed loop: 32 messages in flight per sender, 1,000 receivers in one room, 10 s
    loadgen.py --url ws://127.0.0.1:8080 --receivers 1000 --window 32 --server-pid PID
    # open loop: 50 messages/s offered over 100 rooms x 50 receivers, 4 senders
    loadgen.py --url ws://127.0.0.1:8080 --rooms 100 --receivers 5000 --senders 4 --rate 50
    # what the receivers absorb on their own (a Node firehose server on another CPU)
    loadgen.py --absorb --receivers 1000
    # one room over two processes sharing it through Redis: receivers half on each, senders on
    # the first; CPU of both processes and of redis-server counted, latency per process
    loadgen.py --url ws://127.0.0.1:8080 --url ws://127.0.0.1:8081 --receivers 1000 --rate 5 \
        --server-pid PID1 --server-pid PID2 --redis-port 6390

Progress goes to stderr once a second; the final report (JSON) to stdout and `--json-out`.
The server's CPU and RSS need `--server-pid` (local processes). Many connections need a high
fd limit: the script raises its own (children inherit it); see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _benchredis import redis_pid
from _benchservers import start_server
from _loadplan import PROTOCOLS, PlanError, Target, Workload, make_plan
from _loadrun import LoadSession, Phase, SessionOptions, run_load
from _loadstats import raise_fd_limit
from _loadworkers import node_binary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url",
        action="append",
        help="ws://127.0.0.1:PORT of a running server (loopback only); repeat for several "
        "processes serving the same rooms: receivers alternate over them, senders use the first",
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="hibiki")
    parser.add_argument("--receivers", type=int, default=100, help="receiving connections")
    parser.add_argument("--rooms", type=int, default=1, help="receivers are spread evenly")
    parser.add_argument("--senders", type=int, default=1)
    parser.add_argument("--rate", type=float, help="open loop: total messages/s offered")
    parser.add_argument(
        "--window", type=int, default=32, help="closed loop: messages in flight per sender"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument("--messages", type=int, help="stop after this many messages")
    parser.add_argument("--drain", type=float, default=10.0, help="max seconds to wait after")
    parser.add_argument("--workers", type=int, default=1, help="receiver worker processes")
    parser.add_argument(
        "--sample-every", type=int, default=16, help="latency from one message in K"
    )
    parser.add_argument("--text-size", type=int, default=64, help="characters per message")
    parser.add_argument("--sources", type=int, help="127.0.0.x source addresses (default: auto)")
    parser.add_argument("--accounts-per-room", type=int, default=1, help="hibiki receivers")
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="read this process's CPU and RSS (repeat: summed over the server's processes)",
    )
    parser.add_argument(
        "--extra-pid",
        type=int,
        action="append",
        default=[],
        help="count this process's CPU too, e.g. a redis-server's (repeatable)",
    )
    parser.add_argument(
        "--redis-port",
        type=int,
        help="count the CPU of the redis-server on 127.0.0.1:PORT (its pid from INFO server)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the report here")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument(
        "--absorb",
        action="store_true",
        help="measure the receivers alone against a Node firehose (ignores --url)",
    )
    parser.add_argument("--server-cpu", type=int, help="--absorb: pin the firehose to this CPU")
    args = parser.parse_args(argv)
    if not args.absorb and not args.url:
        parser.error("--url is required (or --absorb)")
    return args


def phase_from(args: argparse.Namespace) -> Phase:
    if args.rate is not None:
        return Phase(
            "open", rate=args.rate, duration=args.duration, messages=args.messages, drain=args.drain
        )
    return Phase(
        "closed",
        window=args.window,
        duration=args.duration,
        messages=args.messages,
        drain=args.drain,
    )


def options_from(
    args: argparse.Namespace,
    server_pids: list[int],
    label: str,
    extra_pids: tuple[int, ...] = (),
) -> SessionOptions:
    return SessionOptions(
        workers=args.workers,
        sample_every=args.sample_every,
        text_size=args.text_size,
        server_pids=tuple(server_pids),
        extra_pids=extra_pids,
        label=label,
        progress=not args.quiet,
    )


def extra_pids_from(args: argparse.Namespace) -> tuple[int, ...]:
    pids = list(args.extra_pid)
    if args.redis_port is not None:
        pid = redis_pid(args.redis_port)
        if pid is None:
            raise PlanError(f"no Redis answered INFO on 127.0.0.1:{args.redis_port}")
        pids.append(pid)
    return tuple(pids)


async def run_from_args(
    args: argparse.Namespace, urls: list[str], protocol: str, server_pids: list[int]
) -> dict[str, Any]:
    targets = [Target.parse(url) for url in urls]
    target = targets[0]
    workload = Workload(args.receivers, args.rooms, args.senders)
    phase = phase_from(args)

    async def plan() -> Any:
        return await make_plan(
            protocol,
            target,
            workload,
            accounts_per_room=args.accounts_per_room,
            sources=args.sources,
            targets=targets,
        )

    label = f"{protocol} {workload.label()}" + (f" x{len(targets)}" if len(targets) > 1 else "")
    options = options_from(args, server_pids, label, extra_pids_from(args))
    return await run_load(target, plan, phase, options)


def absorb(args: argparse.Namespace) -> dict[str, Any]:
    """Receivers against the firehose: the most message frames/s the load generator can count."""
    cpus = sorted(os.sched_getaffinity(0))
    others = [c for c in range(os.cpu_count() or 1) if c not in cpus]
    if args.server_cpu is not None:
        server_cpu = args.server_cpu
    elif others:  # already pinned (e.g. by taskset): the firehose goes to a CPU we do not use
        server_cpu = others[0]
    else:
        server_cpu = cpus[0]
        if len(cpus) > 1:
            os.sched_setaffinity(0, set(cpus[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server("firehose", Path(tmp), cpu=server_cpu)
        try:
            args.senders = 0
            target = Target.parse(server.url)
            workload = Workload(args.receivers, 1, 1)

            async def main() -> dict[str, Any]:
                plan = await make_plan("firehose", target, workload, sources=args.sources)
                plan.senders = []
                options = options_from(args, [server.pid], f"absorb N={args.receivers}")
                async with LoadSession(target, plan, options) as session:
                    return await session.measure_only(args.duration)

            report = trio.run(main)
        finally:
            server.stop()
    report["mode"] = "absorb"
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if node_binary() is None:
        print("loadgen: node (Node.js >= 18) is required", file=sys.stderr)
        return 2
    raise_fd_limit()
    try:
        if args.absorb:
            report = absorb(args)
        else:
            report = trio.run(run_from_args, args, args.url, args.protocol, args.server_pid)
    except PlanError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

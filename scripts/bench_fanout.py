"""Side-by-side fan-out benchmark: hibiki (persistence on, synchronous=FULL) against a minimal
`websockets` broadcast server and python-socketio on uvicorn, alternating A B C A B C in one
session, each server pinned to one CPU and the load generator to another.

Modes:
  flood    closed loop, enough messages in flight to saturate the server: N = 100, 1,000, 5,000
           receivers in one room and 100 rooms x 50 receivers, with 1 and 4 senders
  lowrate  one message at a time (window 1) to N = 1,000: server CPU µs per recipient
  latency  open loop, 5,000 deliveries/s offered to N = 100 and N = 1,000: p50/p99
  chatty   chatty rooms: 5,000 connections in 100 rooms of 50, every one of them a sender at a
           low rate, open loop, 2,000 messages/s in total (0.4/s each, evenly staggered:
           one message every 0.5 ms, the senders taking turns): CPU per delivery, p50/p99

Before the runs, the bare send floor (`bench_floor.send_floor`: CPU per loopback `send()` of one
message frame, on the servers' CPU) is measured, and every row gets its µs per delivery ÷ that.

    python scripts/bench_fanout.py                 # everything (about 20 minutes)
    python scripts/bench_fanout.py --quick         # small N, short runs (about 2 minutes)
    python scripts/bench_fanout.py --modes flood --servers hibiki,websockets --rounds 3
    python scripts/bench_fanout.py --quick --servers hibiki --db postgresql://postgres@127.0.0.1/test
    python scripts/bench_fanout.py --modes chatty --servers hibiki,websockets --rounds 1

`--db URL` adds `hibiki-pg`: hibiki on a fresh PostgreSQL database per run, created on URL's
server (URL names a database to connect to for CREATE/DROP DATABASE), reported beside SQLite.

Writes bench-results/fanout-<time>/{runs.json,floor.json,fanout.md,deliveries.png,p99.png,
chatty.png} and prints the table and the hibiki/peer ratios of deliveries per server-CPU-second.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _benchpg import backend_pids, fresh_database
from _benchreport import markdown, plot, plot_chatty, summarise
from _benchservers import ServerProcess, ServerStartError, dialect, start_server
from _loadplan import PlanError, Target, Workload, make_plan
from _loadrun import Phase, SessionOptions, run_load
from _loadstats import raise_fd_limit
from _loadworkers import WorkerError, node_binary
from bench_floor import send_floor

SERVERS = ("hibiki", "websockets", "socketio")
PG_SERVER = "hibiki-pg"  # with --db: hibiki on PostgreSQL
MODES = ("flood", "lowrate", "latency", "chatty")
ROOT = Path(__file__).resolve().parents[1]
# A run that fails this way is recorded and the benchmark goes on with the next one.
RUN_FAILURES = (ServerStartError, WorkerError, PlanError, ConnectionError, OSError)


@dataclass(frozen=True)
class Job:
    mode: str
    workload: Workload
    phase: Phase
    sample_every: int


def flood_window(workload: Workload, in_flight: int) -> int:
    """Messages in flight per sender so that about `in_flight` deliveries are outstanding."""
    per_room = max(1, workload.receivers // workload.rooms)
    return max(1, min(128, round(in_flight / (per_room * workload.senders))))


def make_jobs(args: argparse.Namespace) -> list[Job]:
    quick = args.quick
    duration = args.duration or (2.0 if quick else 5.0)
    drain = 30.0
    jobs: list[Job] = []
    if "flood" in args.modes:
        sizes = (50, 200) if quick else (100, 1000, 5000)
        shapes = [Workload(n, 1, s) for n in sizes for s in (1, 4)]
        shapes += (
            [Workload(100, 4, s) for s in (1, 4)]
            if quick
            else [Workload(5000, 100, s) for s in (1, 4)]
        )
        for w in shapes:
            window = flood_window(w, args.in_flight)
            phase = Phase("closed", window=window, duration=duration, drain=drain)
            jobs.append(Job("flood", w, phase, 16))
    if "lowrate" in args.modes:
        w = Workload(200 if quick else 1000, 1, 1)
        jobs.append(Job("lowrate", w, Phase("closed", window=1, duration=duration), 4))
    if "latency" in args.modes:
        for n in (50, 200) if quick else (100, 1000):
            rate = args.latency_deliveries / n
            phase = Phase("open", rate=rate, duration=max(duration, 3.0 if quick else 15.0))
            jobs.append(Job("latency", Workload(n, 1, 1), phase, 1))
    if "chatty" in args.modes:
        jobs.append(chatty_job(args, duration))
    return jobs


def chatty_job(args: argparse.Namespace, duration: float) -> Job:
    """Chatty rooms: every connection sends to its room, open loop, staggered evenly."""
    quick = args.quick
    connections = args.chatty_connections or (500 if quick else 5000)
    rooms = args.chatty_rooms or (10 if quick else 100)
    rate = args.chatty_rate or (200.0 if quick else 2000.0)
    workload = Workload(connections, rooms, 0, chatty=True)
    seconds = max(duration, 3.0 if quick else 15.0)
    return Job("chatty", workload, Phase("open", rate=rate, duration=seconds, stagger=True), 1)


async def _load(server: ServerProcess, job: Job, extra_pids: tuple[int, ...]) -> dict[str, Any]:
    target = Target.parse(server.url)

    async def plan() -> Any:
        return await make_plan(dialect(server.kind), target, job.workload)

    options = SessionOptions(
        sample_every=job.sample_every,
        server_pid=server.pid,
        extra_pids=extra_pids,
        label=f"{job.mode} {server.kind} {job.workload.label()}",
    )
    return await run_load(target, plan, job.phase, options)


def run_one(
    kind: str, job: Job, server_cpu: int | None, pg_admin: str | None = None
) -> dict[str, Any]:
    """One run on a fresh server (and for hibiki-pg a fresh database on `pg_admin`'s server,
    whose backends' CPU is counted as the run's extra CPU)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        if kind != PG_SERVER:
            server = start_server(kind, Path(tmp), cpu=server_cpu)
            report = _run_then_stop(server, job, ())
        else:
            assert pg_admin is not None, "hibiki-pg needs --db"
            with fresh_database(pg_admin) as url:
                server = start_server(kind, Path(tmp), cpu=server_cpu, db=url)
                report = _run_then_stop(server, job, backend_pids(pg_admin, url))
    report.update(mode=job.mode, workload=job.workload.label(), server=kind)
    if job.phase.mode == "open":
        per_room = report["receivers"] / max(1, report["rooms"])
        report["offered_deliveries_per_s"] = round(job.phase.rate * per_room, 1)
    return report


def _run_then_stop(server: ServerProcess, job: Job, extra: tuple[int, ...]) -> dict[str, Any]:
    try:
        report: dict[str, Any] = trio.run(_load, server, job, extra)
    finally:
        server.stop()
    return report


def measure_floor(
    args: argparse.Namespace, server_cpu: int | None, out: Path
) -> dict[str, Any] | None:
    """The bare send floor of this run (bench_floor.py's send part on the servers' CPU)."""
    if args.floor_sweeps <= 0:
        return None
    floor = send_floor(args.floor_receivers, args.floor_sweeps, 10.0, sender_cpu=server_cpu)
    (out / "floor.json").write_text(json.dumps(floor, indent=1) + "\n")
    print(f"bench: send floor {floor['cpu_us_per_send']:.2f} µs per send()", file=sys.stderr)
    return floor


def pin_cpus(args: argparse.Namespace) -> int | None:
    """Pin this process (and so the load workers) away from the server's CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or args.no_pin:
        print("bench: fewer than 2 CPUs (or --no-pin): server and load share CPUs", file=sys.stderr)
        return None
    server_cpu = cpus[0] if args.server_cpu is None else args.server_cpu
    os.sched_setaffinity(0, {c for c in cpus if c != server_cpu})
    return server_cpu


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small N, short runs, one round")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated")
    parser.add_argument("--rounds", type=int, help="A B C rounds (default 2, quick 1)")
    parser.add_argument("--duration", type=float, help="seconds of sending per run")
    parser.add_argument(
        "--in-flight", type=int, default=128_000, help="flood: deliveries outstanding"
    )
    parser.add_argument("--latency-deliveries", type=float, default=5000.0)
    parser.add_argument("--chatty-connections", type=int, help="chatty: default 5000 (quick 500)")
    parser.add_argument("--chatty-rooms", type=int, help="chatty: default 100 (quick 10)")
    parser.add_argument(
        "--chatty-rate", type=float, help="chatty: messages/s in total, default 2000 (quick 200)"
    )
    parser.add_argument(
        "--floor-receivers", type=int, default=1000, help="send floor: sockets per sweep"
    )
    parser.add_argument("--floor-sweeps", type=int, default=300, help="send floor: 0 = skip it")
    parser.add_argument("--server-cpu", type=int, help="CPU for the servers (default: first)")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--out", type=Path, help="directory (default bench-results/fanout-TIME)")
    parser.add_argument(
        "--db", metavar="URL", help=f"PostgreSQL server (postgresql://...): adds {PG_SERVER}"
    )
    args = parser.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    if args.db and PG_SERVER not in args.servers:
        args.servers.append(PG_SERVER)
    args.modes = [m for m in args.modes.split(",") if m]
    for name in args.servers:
        if name not in (*SERVERS, PG_SERVER):
            parser.error(f"unknown server {name!r}")
    if PG_SERVER in args.servers and not args.db:
        parser.error(f"{PG_SERVER} needs --db postgresql://...")
    for name in args.modes:
        if name not in MODES:
            parser.error(f"unknown mode {name!r}")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if node_binary() is None:
        print("bench: node (Node.js >= 18) is required", file=sys.stderr)
        return 2
    raise_fd_limit()
    server_cpu = pin_cpus(args)
    out = args.out or ROOT / "bench-results" / time.strftime("fanout-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    failures: list[str] = []
    started = time.monotonic()
    floor = measure_floor(args, server_cpu, out)
    for job in make_jobs(args):
        for round_ in range(args.rounds):
            for kind in args.servers:
                try:
                    run = run_one(kind, job, server_cpu, args.db)
                    runs.append(run | {"round": round_})
                except* RUN_FAILURES as group:
                    failures.append(f"{job.mode} {job.workload.label()} {kind}: {group.exceptions}")
                    print(f"bench: FAILED {failures[-1]}", file=sys.stderr)
                (out / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    rows = summarise(runs)
    header = (
        f"Fan-out benchmark, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{args.rounds} round(s), medians; server on CPU {server_cpu}, load on the others; "
        f"`{' '.join(['scripts/bench_fanout.py', *(argv or sys.argv[1:])])}` "
        f"({time.monotonic() - started:.0f} s)"
    )
    if floor is not None:
        header += (
            f"; bare send floor {floor['cpu_us_per_send']:.2f} µs per send() on CPU "
            f"{floor['sender_cpu']} ({floor['receivers']:,} sockets x {args.floor_sweeps} sweeps)"
        )
    text = markdown(rows, header, floor_us=floor["cpu_us_per_send"] if floor else None)
    if failures:
        text += "\nFailed runs:\n\n" + "\n".join(f"- {f}" for f in failures) + "\n"
    (out / "fanout.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    images: list[Path] = []
    if importlib.util.find_spec("matplotlib") is None:
        print("bench: no plots: matplotlib (the `bench` extra) is not installed", file=sys.stderr)
    else:
        images += plot(rows, out)
        images += plot_chatty(rows, out, floor["cpu_us_per_send"] if floor else None)
    print(text)
    print(f"written: {out / 'fanout.md'}, {', '.join(str(p) for p in images)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

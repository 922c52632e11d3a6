"""Cross-process benchmark: one room of N receivers served by one process, or split over two
processes sharing the room through a private redis-server, for hibiki (persisting every message)
and two peers that store nothing: python-socketio with its Redis manager on uvicorn, and Node
Socket.IO with @socket.io/redis-adapter. Every server process and redis-server share one CPU;
the load generator uses the others. Senders connect to the first process, receivers alternate
over the processes, so half the deliveries cross processes.

Modes:
  latency  open loop at a fixed 5,000 deliveries/s to N = 1,000 (5 messages/s): CPU per delivery
           and p50/p99 send->receive, same-node and cross-node
  flood    closed loop to N = 1,000 with about 128,000 deliveries outstanding, 1 and 4 senders:
           deliveries per CPU-second

    python scripts/bench_cluster.py                      # every case, 1 round (about 15 min)
    python scripts/bench_cluster.py --quick              # N = 200, short runs (about 3 min)
    python scripts/bench_cluster.py --servers socketio:1,socketio:2 --modes flood

A case is SERVER:PROCESSES. hibiki on several processes needs `hibiki serve --redis`; while the
flag does not exist that case is skipped with a message (and listed under "Not run").
Before the runs, the bare send floor of this machine (bench_floor.send_floor: CPU per loopback
`send()` of one frame to each of N sockets, on the servers' CPU) is measured at the latency
mode's own pace (a sweep of N sends every N / 5,000 s: 200 ms at N = 1,000; a send after a pause
costs more than one in a tight loop), and each row's µs per delivery is also given as a multiple
of it: at 5 messages/s every delivery is one `send()` for every server, so that floor bounds what
any of them can reach. `--floor-sweeps 0` skips it; `--floor-gap-ms` sets another pace.
Writes bench-results/cluster-<time>/{runs.json,summary.json,floor.json,cluster.md} and prints
the table.
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
from _benchcluster import Case, Cluster, case_missing, start_cluster
from _benchredis import RedisStartError
from _benchservers import dialect
from _clusterreport import markdown_cluster, process_ratios, summarise_cluster
from _loadplan import Target, Workload, make_plan
from _loadrun import Phase, SessionOptions, run_load
from _loadstats import raise_fd_limit
from _loadworkers import node_binary
from bench_fanout import RUN_FAILURES, Job, flood_window, pin_cpus
from bench_floor import send_floor

CASES = "hibiki:1,hibiki:2,socketio:1,socketio:2,node-socketio:1,node-socketio:2"
MODES = ("latency", "flood")
ROOT = Path(__file__).resolve().parents[1]


def make_jobs(args: argparse.Namespace) -> list[Job]:
    n = args.receivers or (200 if args.quick else 1000)
    duration = args.duration or (2.0 if args.quick else 5.0)
    jobs: list[Job] = []
    if "latency" in args.modes:
        rate = args.latency_deliveries / n
        phase = Phase("open", rate=rate, duration=max(duration, 3.0 if args.quick else 15.0))
        jobs.append(Job("latency", Workload(n, 1, 1), phase, 1))
    if "flood" in args.modes:
        for senders in args.senders:
            w = Workload(n, 1, senders)
            window = flood_window(w, args.in_flight)
            phase = Phase("closed", window=window, duration=duration, drain=60.0)
            jobs.append(Job("flood", w, phase, 16))
    return jobs


async def load_cluster(cluster: Cluster, job: Job) -> dict[str, Any]:
    """Plan `job` over the cluster's processes, connect, run it, close: the load's report."""
    targets = [Target.parse(server.url) for server in cluster.servers]

    async def plan() -> Any:
        return await make_plan(
            dialect(cluster.case.kind), targets[0], job.workload, targets=targets
        )

    options = SessionOptions(
        sample_every=job.sample_every,
        server_pids=cluster.server_pids,
        extra_pids=cluster.extra_pids,
        label=f"{job.mode} {cluster.case.name} {job.workload.label()}",
    )
    return await run_load(targets[0], plan, job.phase, options)


def run_case(case: Case, job: Job, cpu: int | None) -> dict[str, Any]:
    """Start `case` fresh, run `job` against it, stop it; the load generator's report."""
    with tempfile.TemporaryDirectory(prefix=f"bench-cluster-{case.kind}-") as tmp:
        cluster = start_cluster(case, Path(tmp), cpu=cpu)
        try:
            report = trio.run(load_cluster, cluster, job)
        finally:
            cluster.stop()
    report.update(
        mode=job.mode,
        workload=job.workload.label(),
        server=case.kind,
        processes=case.processes,
        case=case.name,
    )
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N = 200, short runs")
    parser.add_argument("--servers", default=CASES, help="comma-separated SERVER:PROCESSES")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="A B C rounds (medians)")
    parser.add_argument("--receivers", type=int, help="N in the one room (default 1,000)")
    parser.add_argument("--senders", default="1,4", help="flood: comma-separated sender counts")
    parser.add_argument("--duration", type=float, help="seconds of sending per run")
    parser.add_argument("--in-flight", type=int, default=128_000, help="flood: outstanding")
    parser.add_argument("--latency-deliveries", type=float, default=5000.0, help="per second")
    parser.add_argument("--server-cpu", type=int, help="CPU for servers and Redis (first)")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--out", type=Path, help="directory (default bench-results/cluster-TIME)")
    parser.add_argument(
        "--floor-receivers", type=int, default=1000, help="send floor: sockets per sweep"
    )
    parser.add_argument("--floor-sweeps", type=int, default=50, help="send floor: 0 = skip it")
    parser.add_argument(
        "--floor-gap-ms", type=float, help="send floor: ms between sweeps (default: latency pace)"
    )
    args = parser.parse_args(argv)
    try:
        args.cases = [Case.parse(c) for c in args.servers.split(",") if c]
        args.senders = [int(s) for s in args.senders.split(",") if s]
    except ValueError as exc:
        parser.error(str(exc))
    args.modes = [m for m in args.modes.split(",") if m]
    for name in args.modes:
        if name not in MODES:
            parser.error(f"unknown mode {name!r}")
    return args


def measure_floor(
    args: argparse.Namespace, server_cpu: int | None, out: Path
) -> dict[str, Any] | None:
    """The bare send floor of this run, at the latency mode's pace unless told otherwise."""
    if args.floor_sweeps <= 0:
        return None
    gap_ms = args.floor_gap_ms
    if gap_ms is None:
        gap_ms = 1000.0 * args.floor_receivers / args.latency_deliveries
    floor = send_floor(args.floor_receivers, args.floor_sweeps, gap_ms, sender_cpu=server_cpu)
    floor["gap_ms"] = gap_ms
    (out / "floor.json").write_text(json.dumps(floor, indent=1) + "\n")
    print(f"bench: send floor {floor['cpu_us_per_send']:.2f} µs per send()", file=sys.stderr)
    return floor


def runnable(cases: list[Case]) -> tuple[list[Case], list[str]]:
    """The cases this machine can run, and a line saying why for each of the others."""
    keep, skipped = [], []
    for case in cases:
        missing = case_missing(case)
        if missing is None:
            keep.append(case)
        else:
            skipped.append(f"{case.name}: {missing}")
            print(f"bench: skipping {case.name}: {missing}", file=sys.stderr)
    return keep, skipped


def write_results(
    out: Path,
    runs: list[dict[str, Any]],
    header: str,
    skipped: list[str],
    failures: list[str],
    floor_us: float | None = None,
) -> str:
    rows = summarise_cluster(runs)
    text = markdown_cluster(rows, header, skipped, floor_us=floor_us)
    if failures:
        text += "\nFailed runs:\n\n" + "\n".join(f"- {f}" for f in failures) + "\n"
    (out / "cluster.md").write_text(text)
    summary = {"rows": rows, "processes": process_ratios(rows), "skipped": skipped}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if node_binary() is None:
        print("bench: node (Node.js >= 18) is required", file=sys.stderr)
        return 2
    raise_fd_limit()
    cases, skipped = runnable(args.cases)
    server_cpu = pin_cpus(args)
    out = args.out or ROOT / "bench-results" / time.strftime("cluster-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    floor = measure_floor(args, server_cpu, out)
    runs: list[dict[str, Any]] = []
    failures: list[str] = []
    for job in make_jobs(args):
        for round_ in range(args.rounds):
            for case in cases:
                try:
                    runs.append(run_case(case, job, server_cpu) | {"round": round_})
                except* (*RUN_FAILURES, RedisStartError) as group:
                    what = f"{job.mode} {job.workload.label()} {case.name}"
                    failures.append(f"{what}: {group.exceptions}")
                    print(f"bench: FAILED {failures[-1]}", file=sys.stderr)
                (out / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    header = (
        f"Cross-process benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {args.rounds} round(s), "
        f"medians; servers and redis-server on CPU {server_cpu}, load on the others; "
        f"`{' '.join(['scripts/bench_cluster.py', *(argv or sys.argv[1:])])}` "
        f"({time.monotonic() - started:.0f} s)"
    )
    floor_us = None
    if floor is not None:
        floor_us = floor["cpu_us_per_send"]
        header += (
            f"; bare send floor {floor_us:.2f} µs per send() on CPU {floor['sender_cpu']} "
            f"({floor['receivers']:,} sockets x {args.floor_sweeps} sweeps, "
            f"{floor['gap_ms']:.0f} ms apart)"
        )
    text = write_results(out, runs, header, skipped, failures, floor_us)
    print(text)
    print(f"written: {out / 'cluster.md'}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

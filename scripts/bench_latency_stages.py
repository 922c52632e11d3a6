"""Where hibiki's send→receive latency goes at light load (issue #14): a stage trace, A/B.

Runs bench_fanout's latency workload (open loop, `--deliveries` per second to `--receivers` in one
room; default 5,000/s to 100, i.e. 50 messages/s) on hibiki variants and the `websockets` peer,
alternating A B C per round, each on a fresh server pinned to one CPU. Each hibiki runs with
`HIBIKI_STAGE_TRACE` (server/persist/stage_trace.py): per message the CLOCK_MONOTONIC times of the
client's send, the server's read, commit start and end, publish and the sweep that sent it, and
every cyclic-GC pass. Then the paced one-row commit floor (`bench_floor.py --parts commit`) in
the same run. Prints, per variant: the client's p50/p99 (every delivery), each stage's p50/p99,
and for the slowest 1% of messages (client send → server sent) the mean time in each stage and
the share that overlapped a GC pass.

    python scripts/bench_latency_stages.py                       # base vs websockets, 1 round
    python scripts/bench_latency_stages.py --variant nogc=HIBIKI_GC_FREEZE=false --rounds 2

A variant is NAME=ENV[,ENV...] (environment settings, e.g. `HIBIKI_...=value`) given to that
hibiki; `base` (no settings) always runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _benchservers import start_server
from _loadplan import Target, Workload, make_plan
from _loadrun import Phase, SessionOptions, run_load
from _loadstats import raise_fd_limit
from bench_fanout import pin_cpus
from bench_floor import measure_commit
from bench_floor import parse_args as floor_args

ROOT = Path(__file__).resolve().parents[1]
# (name, from stamp, to stamp) over a trace line's stamps: client, read, commit start, commit
# end, published, sent, then on the writer thread: job start, COMMIT issued, job end.
STAGES = (
    ("in", 0, 1),  # client send → server read: loopback, the server's wake-up, its queue
    ("queued", 1, 2),  # read → commit start: the writer's turn
    ("commit", 2, 3),  # commit start → end, as the trio side sees it (thread hand-off in it)
    ("to_thread", 2, 6),  # commit start → the writer thread runs the job
    ("statements", 6, 7),  # BEGIN and the inserts
    ("COMMIT", 7, 8),  # the COMMIT statement (the WAL fsync; any autocheckpoint)
    ("from_thread", 8, 3),  # job done → the trio side resumes
    ("publish", 3, 4),  # commit end → frames and acks queued
    ("sweep", 4, 5),  # queued → the sweep that sent them returned
    ("server", 1, 5),  # read → sent
    ("total", 0, 5),  # client send → sent
)


@dataclass
class Trace:
    messages: list[list[int]] = field(default_factory=list)
    gcs: list[tuple[int, int, int]] = field(default_factory=list)  # start, end, generation


def read_trace(path: Path) -> Trace:
    trace = Trace()
    for line in path.read_text().splitlines():
        kind, *values = line.split()
        numbers = [int(v) for v in values]
        if kind == "m" and numbers[0] and numbers[1]:  # the load generator's, stamped
            trace.messages.append(numbers)
        elif kind == "gc":
            trace.gcs.append((numbers[0], numbers[1], numbers[2]))
    return trace


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def gc_overlap_us(stamps: list[int], gcs: list[tuple[int, int, int]]) -> int:
    """Microseconds of GC passes inside a message's client-send → sent window."""
    start, end = stamps[0], stamps[5]
    return sum(max(0, min(end, g1) - max(start, g0)) for g0, g1, _ in gcs)


def stage_report(trace: Trace) -> dict[str, Any]:
    """Each stage's p50/p99 (ms), and where the slowest 1% (by total) spent their time."""
    msgs = trace.messages
    out: dict[str, Any] = {"messages": len(msgs)}
    for name, a, b in STAGES:
        spans = [(m[b] - m[a]) / 1000 for m in msgs if m[a] and m[b]]  # no thread: PostgreSQL
        out[name] = {
            "p50": round(percentile(spans, 0.5), 3),
            "p99": round(percentile(spans, 0.99), 3),
        }
    slow = sorted(msgs, key=lambda m: m[5] - m[0])[-max(1, len(msgs) // 100) :]
    out["slowest_1pct_mean_ms"] = {
        name: round(
            statistics.mean([(m[b] - m[a]) / 1000 for m in slow if m[a] and m[b]] or [0]), 3
        )
        for name, a, b in STAGES
    }
    overlaps = [gc_overlap_us(m, trace.gcs) for m in slow]
    out["slowest_1pct_with_gc"] = f"{sum(1 for o in overlaps if o)}/{len(slow)}"
    out["slowest_1pct_gc_mean_ms"] = round(statistics.mean(overlaps) / 1000, 3)
    pauses = [(g1 - g0) / 1000 for g0, g1, _ in trace.gcs]
    out["gc"] = {
        "passes": len(pauses),
        "by_generation": {g: sum(1 for *_, gen in trace.gcs if gen == g) for g in (0, 1, 2)},
        "p99_ms": round(percentile(pauses, 0.99), 3),
        "max_ms": round(max(pauses, default=0.0), 3),
    }
    return out


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, settings = text.partition("=")
    env = dict(s.split("=", 1) for s in settings.split(",") if s)
    return name, env


async def _load(url: str, kind: str, workload: Workload, phase: Phase, pid: int) -> Any:
    target = Target.parse(url)

    async def plan() -> Any:
        return await make_plan(kind, target, workload)

    options = SessionOptions(sample_every=1, server_pid=pid, label=f"latency {kind}")
    return await run_load(target, plan, phase, options)


def run_one(
    kind: str, env: dict[str, str], args: argparse.Namespace, cpu: int | None
) -> dict[str, Any]:
    """One run on a fresh server; hibiki's with its stage trace read back."""
    workload = Workload(args.receivers, 1, 1)
    phase = Phase("open", rate=args.deliveries / args.receivers, duration=args.duration)
    with tempfile.TemporaryDirectory(prefix=f"stages-{kind}-") as tmp:
        trace_path = Path(tmp) / "stages.trace"
        settings = env | {"HIBIKI_STAGE_TRACE": str(trace_path)} if kind == "hibiki" else {}
        saved = {k: os.environ.get(k) for k in settings}
        os.environ.update(settings)
        try:
            server = start_server(kind, Path(tmp), cpu=cpu)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        try:
            report: dict[str, Any] = trio.run(_load, server.url, kind, workload, phase, server.pid)
        finally:
            server.stop()
        result = {"client_ms": report["latency_ms"]}
        if kind == "hibiki":
            result["stages"] = stage_report(read_trace(trace_path))
        return result


def print_summary(runs: dict[str, list[dict[str, Any]]], floor: dict[str, Any]) -> None:
    for name, results in runs.items():
        for i, r in enumerate(results):
            c = r["client_ms"]
            print(f"{name} round {i}: client p50 {c['p50']} p99 {c['p99']} max {c['max']} ms")
            if "stages" in r:
                s = r["stages"]
                print(
                    "  stage p50/p99 ms: "
                    + ", ".join(f"{n} {s[n]['p50']}/{s[n]['p99']}" for n, *_ in STAGES)
                )
                print(f"  slowest 1% mean ms: {s['slowest_1pct_mean_ms']}")
                print(
                    f"  slowest 1% overlapping GC: {s['slowest_1pct_with_gc']}"
                    f" (mean {s['slowest_1pct_gc_mean_ms']} ms); GC {s['gc']}"
                )
    print(
        f"paced one-row commit ({floor['gap_ms']} ms apart): p50 "
        f"{floor['paced_sqlite_commit_ms_p50']:.2f} "
        f"p99 {floor['paced_sqlite_commit_ms_p99']:.2f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=ENV[,ENV...]")
    parser.add_argument("--no-peer", action="store_true", help="skip the websockets peer")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--receivers", type=int, default=100)
    parser.add_argument("--deliveries", type=float, default=5000.0, help="per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of sending")
    parser.add_argument("--commits", type=int, default=750, help="commit floor: commits")
    parser.add_argument("--out", type=Path, help="JSON of every run (default bench-results/)")
    args = parser.parse_args(argv)
    args.no_pin, args.server_cpu = False, None
    variants = [("base", {}), *(parse_variant(v) for v in args.variant)]
    raise_fd_limit()
    cpu = pin_cpus(args)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    if not args.no_peer:
        runs["websockets"] = []
    for _ in range(args.rounds):
        for name, env in variants:
            runs[name].append(run_one("hibiki", env, args, cpu))
        if not args.no_peer:
            runs["websockets"].append(run_one("websockets", {}, args, cpu))
    with tempfile.TemporaryDirectory(prefix="stages-floor-") as tmp:
        floor = measure_commit(floor_args(["--commits", str(args.commits)]), Path(tmp))
    out = args.out or ROOT / "bench-results" / time.strftime("stages-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": runs, "commit_floor": floor}, indent=1) + "\n")
    print_summary(runs, floor)
    print(f"written: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

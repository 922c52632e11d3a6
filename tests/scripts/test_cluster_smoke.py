"""Smoke tests of the cross-process benchmark tools in scripts/: receivers split over several
server processes, the peers on two processes sharing a room through a private redis-server,
bench_cluster.py and bench_redis.py end to end on tiny configurations, and the cluster report.
Counts and shapes are checked; timings never are.

Without node, the Node peer's npm modules, redis-server, `redis` or coredis these tests skip,
saying why; with CI=true a missing redis-server fails them instead (CI's machine has one).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from _benchcluster import Case, case_missing, start_cluster
from _benchredis import ping, redis_pid, start_redis
from _clusterreport import markdown_cluster, peer_ratios, process_ratios, summarise_cluster
from _loadplan import Target, Workload, make_plan
from _loadrun import Phase
from bench_fanout import Job

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
BOUND = 90  # seconds; generous for a loaded 2-core machine

needs_node = pytest.mark.skipif(
    shutil.which("node") is None,
    reason="node (Node.js) is not installed: the load generator's sockets live in Node workers",
)


def require_redis() -> None:
    """Skip without redis-server, except in CI, where its absence is a failure."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is missing in CI (the machine is meant to have it)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")


def require_case(case: Case) -> None:
    if case.processes > 1:
        require_redis()
    missing = case_missing(case)
    if missing is not None:
        pytest.skip(missing)


async def test_receivers_alternate_over_targets_within_each_room() -> None:
    targets = [Target("127.0.0.1", 9001), Target("127.0.0.1", 9002)]
    plan = await make_plan("socketio", targets[0], Workload(16, 2, 2), targets=targets)
    assert plan.targets == targets
    for room in plan.rooms:
        on = [spec["target"] for spec in plan.receivers if spec["rooms"] == [room]]
        assert sorted(on) == [0, 0, 0, 0, 1, 1, 1, 1], (room, on)  # half on each process
    assert [spec["target"] for spec in plan.senders] == [0, 0]  # senders on the first


async def test_a_plan_without_targets_uses_its_setup_target() -> None:
    target = Target("127.0.0.1", 9001)
    plan = await make_plan("websockets", target, Workload(3, 1, 1))
    assert plan.targets == [target]
    assert {spec["target"] for spec in plan.receivers} == {0}


def test_private_redis_answers_and_reports_its_pid(tmp_path: Path) -> None:
    require_redis()
    redis = start_redis(tmp_path)
    try:
        assert ping(redis.port)
        assert redis_pid(redis.port) == redis.pid
    finally:
        redis.stop()
    assert not ping(redis.port)


@needs_node
@pytest.mark.parametrize(
    "case",
    [Case("socketio", 2), Case("node-socketio", 1), Case("node-socketio", 2)],
    ids=lambda c: c.name,
)
async def test_peer_case_delivers_every_message_to_every_process(
    case: Case, tmp_path: Path
) -> None:
    """The peer's processes, its Redis, the load split over them and the per-target report."""
    require_case(case)
    from bench_cluster import load_cluster

    job = Job("flood", Workload(6, 1, 1), Phase("closed", window=2, messages=20, duration=5), 1)
    cluster = await trio.to_thread.run_sync(lambda: start_cluster(case, tmp_path))
    try:
        with trio.fail_after(BOUND):
            report = await load_cluster(cluster, job)
    finally:
        await trio.to_thread.run_sync(cluster.stop)
    assert report["sent"] == 20
    assert report["deliveries"] == 120
    assert report["missing_deliveries"] == 0
    assert report["errors"]["closed"] == report["errors"]["error_frames"] == 0
    assert len(report["targets"]) == case.processes
    assert [t["deliveries"] for t in report["targets"]] == [120 // case.processes] * case.processes
    assert report["server_pids"] == [s.pid for s in cluster.servers]
    # CPU time is counted in 10 ms clock ticks: a Node server (and its Redis) can spend less
    # than one tick on 120 deliveries, so these may read 0; what is checked is that the servers
    # and Redis are counted, and that the total is exactly their sum.
    assert report["server_cpu_s"] is not None and report["server_cpu_s"] >= 0
    assert report["extra_cpu_s"] >= 0
    assert report["total_cpu_s"] == pytest.approx(
        report["server_cpu_s"] + report["extra_cpu_s"], abs=0.0015
    )
    if case.processes > 1:
        assert cluster.redis is not None
        assert report["extra_pids"] == [cluster.redis.pid]
        assert report["latency_cross_node_ms"]["samples"] == 60  # sample_every=1
        assert report["latency_same_node_ms"]["samples"] == 60
    else:
        assert report["latency_cross_node_ms"] is None


@needs_node
async def test_loadgen_cli_splits_receivers_and_counts_every_process(tmp_path: Path) -> None:
    """`--url` twice, `--server-pid` twice and `--redis-port`, as docs/benchmarks.md shows."""
    case = Case("socketio", 2)
    require_case(case)
    cluster = await trio.to_thread.run_sync(lambda: start_cluster(case, tmp_path))
    assert cluster.redis is not None
    out = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPTS / "loadgen.py"), "--protocol", "socketio"]
    for server in cluster.servers:
        command += ["--url", server.url, "--server-pid", str(server.pid)]
    command += ["--redis-port", str(cluster.redis.port), "--receivers", "4", "--messages", "10"]
    command += ["--window", "2", "--sample-every", "1", "--quiet", "--json-out", str(out)]
    try:
        with trio.fail_after(BOUND):
            done = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
    finally:
        await trio.to_thread.run_sync(cluster.stop)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = json.loads(out.read_text())
    assert report["deliveries"] == 40 and report["missing_deliveries"] == 0
    assert report["server_pids"] == [s.pid for s in cluster.servers]
    assert report["extra_pids"] == [cluster.redis.pid]
    assert [t["deliveries"] for t in report["targets"]] == [20, 20]
    assert [t["node"] for t in report["targets"]] == ["same", "cross"]
    assert report["latency_cross_node_ms"]["samples"] == 20


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=BOUND * 2, check=False
    )


@needs_node
def test_bench_cluster_writes_its_table_and_names_what_it_could_not_run(tmp_path: Path) -> None:
    if importlib.util.find_spec("socketio") is None:
        pytest.skip("python-socketio (the `bench` extra) is not installed")
    done = _run(
        str(SCRIPTS / "bench_cluster.py"),
        *("--servers", "hibiki:1,socketio:1,hibiki:2", "--modes", "flood", "--senders", "1"),
        *("--receivers", "4", "--duration", "0.5", "--no-pin", "--out", str(tmp_path)),
        *("--floor-receivers", "10", "--floor-sweeps", "5"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    floor = json.loads((tmp_path / "floor.json").read_text())
    assert floor["receivers"] == 10
    assert floor["gap_ms"] == pytest.approx(2.0)  # 10 sockets at 5,000 deliveries/s
    assert floor["cpu_us_per_send"] > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    cases = {row["case"] for row in summary["rows"]}
    assert {"hibiki x1", "socketio x1"} <= cases
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert all(run["missing_deliveries"] == 0 for run in runs)
    table = (tmp_path / "cluster.md").read_text()
    assert "bare send floor" in table.splitlines()[0]
    assert "| flood | N=4 S=1 | hibiki | 1 |" in table
    assert "| flood | N=4 S=1 | 1 | socketio |" in table  # the hibiki ÷ peer ratio row
    if "hibiki x2" not in cases:  # skipped, and said so, while hibiki has no --redis
        assert "hibiki x2: `hibiki serve --help` lists no --redis" in table
        assert "skipping hibiki x2" in done.stderr


def test_bench_redis_measures_the_bus_beside_redis_benchmark(tmp_path: Path) -> None:
    require_redis()
    if importlib.util.find_spec("coredis") is None:
        pytest.skip("coredis is not installed")
    out = tmp_path / "redis.json"
    done = _run(
        str(SCRIPTS / "bench_redis.py"),
        *("--messages", "2000", "--sizes", "200", "--subscribers", "0,1", "--batch", "1,4"),
        *("--json-out", str(out)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs: list[dict[str, Any]] = json.loads(out.read_text())
    bus = [r for r in runs if r["client"] == "coredis"]
    assert [(r["subscribers"], r["batch"]) for r in bus] == [(0, 1), (0, 4), (1, 1), (1, 4)]
    assert all(r["payload_bytes"] == 200 and r["publish_msgs_per_s"] > 0 for r in bus)
    assert [r["publishes"] for r in bus] == [2000, 500, 2000, 500]
    subscribed = [r for r in runs if r["subscribers"] == 1]
    assert all(r["all_received"] and r["received_min"] == 2000 for r in subscribed)
    if shutil.which("redis-benchmark"):
        assert [r["subscribers"] for r in runs if r["client"] == "redis-benchmark"] == [0, 1]
        assert "publish ÷ redis-benchmark" in done.stdout


def _run_of(
    server: str, processes: int, us: float, same: float, cross: float | None
) -> dict[str, Any]:
    return {
        "mode": "flood",
        "workload": "N=1000 S=1",
        "server": server,
        "processes": processes,
        "receivers": 1000,
        "senders": 1,
        "deliveries_per_s": 1e6 / us,
        "total_cpu_us_per_delivery": us,
        "deliveries_per_cpu_s": 1e6 / us,
        "server_cpu_us_per_delivery": us * 0.9,
        "extra_cpu_s": 0.1 if processes > 1 else 0.0,
        "total_cpu_s": 1.0,
        "latency_ms": {"p50": 1.0, "p99": same},
        "latency_same_node_ms": {"p50": 1.0, "p99": same},
        "latency_cross_node_ms": None if cross is None else {"p50": 2.0, "p99": cross},
        "client_limited": False,
        "other_cpu_util": 0.0,
        "missing_deliveries": 0,
        "errors": {"error_frames": 0, "closed": 0},
    }


def test_cluster_report_has_peer_and_process_ratios() -> None:
    runs = [
        _run_of("hibiki", 1, 1.0, 5.0, None),
        _run_of("hibiki", 2, 1.2, 5.0, 6.5),
        _run_of("socketio", 1, 100.0, 50.0, None),
        _run_of("socketio", 2, 130.0, 60.0, 70.0),
    ]
    rows = summarise_cluster(runs)
    peers = {(x["processes"], x["peer"]): x["ratio"] for x in peer_ratios(rows)}
    assert peers == {
        (1, "socketio"): pytest.approx(100.0),
        (2, "socketio"): pytest.approx(130 / 1.2),
    }
    scaling = {x["server"]: x for x in process_ratios(rows)}
    assert scaling["hibiki"]["cpu_ratio"] == pytest.approx(1.2)
    assert scaling["hibiki"]["cross_minus_same_p99_ms"] == pytest.approx(1.5)
    assert scaling["socketio"]["cpu_ratio"] == pytest.approx(1.3)
    text = markdown_cluster(rows, "header", ["node-socketio x2: not installed"])
    assert "| flood | N=1000 S=1 | 2 | socketio | 108.3x |" in text
    assert "| flood | N=1000 S=1 | hibiki | 2 | 1.20x | 1.50 | 5.00 |" in text
    assert "- node-socketio x2: not installed" in text
    assert "| flood | N=1000 S=1 | hibiki | 2 | 833,333 | 1.200 | - | 833,333 | 10% |" in text
    with_floor = markdown_cluster(rows, "header", floor_us=0.6)
    assert "| flood | N=1000 S=1 | hibiki | 2 | 833,333 | 1.200 | 2.00x | 833,333 |" in with_floor

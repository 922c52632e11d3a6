"""Smoke tests of the load tools in scripts/: the load generator's core against a real hibiki
server (few clients, about a second of sending), one tiny benchmark run against a peer, and the
report plumbing. Counts are checked; timings never are."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from ..conftest import make_config, running_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from _benchreport import markdown, plot, summarise
from _loadplan import PlanError, Target, Workload, make_plan
from _loadrun import LoadSession, Phase, SessionOptions

needs_node = pytest.mark.skipif(
    shutil.which("node") is None,
    reason="node (Node.js) is not installed: the load generator's sockets live in Node workers",
)
BOUND = 60  # seconds; generous for a loaded 2-core machine


async def _run(port: int, workload: Workload, phase: Phase) -> dict[str, Any]:
    target = Target.parse(f"ws://127.0.0.1:{port}")
    plan = await make_plan("hibiki", target, workload)
    options = SessionOptions(sample_every=1, server_pid=os.getpid(), progress=False)
    async with LoadSession(target, plan, options) as session:
        return await session.run_phase(phase)


def _assert_complete(report: dict[str, Any], receivers_per_room: int) -> None:
    assert report["sent"] > 0
    assert report["errors"]["error_frames"] == 0, report["errors"]
    assert report["errors"]["closed"] == 0, report["errors"]
    assert report["errors"]["connect_failed"] == 0, report["errors"]
    assert report["deliveries"] > 0
    assert report["deliveries"] == report["sent"] * receivers_per_room
    assert report["missing_deliveries"] == 0
    assert report["latency_ms"]["samples"] == report["deliveries"]  # sample_every=1
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
    assert isinstance(report["client_limited"], bool)
    assert report["server_cpu_s"] is not None and report["server_rss_kib"] > 0


@needs_node
async def test_closed_loop_delivers_every_message_to_every_receiver(tmp_path: Path) -> None:
    with trio.fail_after(BOUND):
        async with running_server(make_config(tmp_path, rate_per_second=0)) as server:
            report = await _run(
                server.port,
                Workload(receivers=6, rooms=2, senders=2),
                Phase("closed", window=4, duration=1.0, messages=60),
            )
    assert report["sent"] == 60
    assert report["rtt_ms"]["samples"] == 60  # every sender saw the echo of each of its messages
    _assert_complete(report, receivers_per_room=3)


@needs_node
async def test_open_loop_offers_the_rate_to_one_big_room(tmp_path: Path) -> None:
    with trio.fail_after(BOUND):
        async with running_server(make_config(tmp_path, rate_per_second=0)) as server:
            report = await _run(
                server.port,
                Workload(receivers=8, rooms=1, senders=1),
                Phase("open", rate=40, duration=1.0),
            )
    assert report["phase"]["mode"] == "open"
    _assert_complete(report, receivers_per_room=8)


def test_non_loopback_targets_are_refused() -> None:
    with pytest.raises(PlanError, match="non-loopback"):
        Target.parse("ws://192.0.2.1:8080")
    assert Target.parse("ws://127.0.0.2:8080/ws").port == 8080


@needs_node
@pytest.mark.parametrize("peer", ["websockets", "socketio"])
def test_benchmark_run_against_a_peer(peer: str) -> None:
    """bench_fanout's plumbing end to end: the peer server process, its dialect, the report."""
    module = {"websockets": "websockets", "socketio": "socketio"}[peer]
    if importlib.util.find_spec(module) is None or importlib.util.find_spec("uvicorn") is None:
        pytest.skip(f"{module} (the `bench` extra) is not installed")
    from bench_fanout import Job, run_one

    job = Job("flood", Workload(3, 1, 1), Phase("closed", window=2, messages=20, duration=5), 1)
    report = run_one(peer, job, server_cpu=None)
    assert report["server"] == peer
    assert report["sent"] == 20
    assert report["deliveries"] == 60
    assert report["missing_deliveries"] == 0


def test_benchmark_report_has_table_ratios_and_plots(tmp_path: Path) -> None:
    def run(server: str, receivers: int, us: float) -> dict[str, Any]:
        return {
            "mode": "flood",
            "workload": f"N={receivers} S=1",
            "server": server,
            "receivers": receivers,
            "rooms": 1,
            "senders": 1,
            "deliveries_per_s": 1e6 / us,
            "server_cpu_us_per_delivery": us,
            "latency_ms": {"p50": 1.0, "p99": 2.0},
            "server_cpu_util": 0.99,
            "client_cpu_util": 0.5,
            "client_limited": False,
            "missing_deliveries": 0,
            "errors": {"error_frames": 0, "closed": 0},
        }

    runs = [run(s, n, us) for n in (10, 100) for s, us in (("hibiki", 1.0), ("websockets", 10.0))]
    rows = summarise(runs)
    text = markdown(rows, "header")
    assert "| flood | N=100 S=1 | hibiki |" in text
    assert "| flood | N=100 S=1 | websockets | 10.0x |" in text
    if importlib.util.find_spec("matplotlib") is not None:
        written = plot(rows, tmp_path)
        assert [p.name for p in written] == ["deliveries.png", "p99.png"]
        assert all(p.stat().st_size > 0 for p in written)

"""Smoke tests of the chatty-rooms workload of scripts/bench_fanout.py (issue #14): every
connection a sender at a low rate that also receives, at tiny sizes; every message must reach
every member of its room, the sender's own echo included. Counts are checked; timings never are."""

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

from ..conftest import make_config, running_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from _benchreport import markdown, plot_chatty, summarise
from _loadplan import PlanError, Target, Workload, make_plan
from _loadrun import LoadSession, Phase, SessionOptions

needs_node = pytest.mark.skipif(
    shutil.which("node") is None,
    reason="node (Node.js) is not installed: the load generator's sockets live in Node workers",
)
BOUND = 60  # seconds; generous for a loaded 2-core machine
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def test_chatty_workload_is_every_connection_a_receiving_sender() -> None:
    with pytest.raises(PlanError, match="chatty"):
        Workload(10, 2, 1, chatty=True)
    assert Workload(500, 10, 0, chatty=True).label() == "chatty 10x50"


@needs_node
async def test_chatty_rooms_deliver_every_message_to_every_member(tmp_path: Path) -> None:
    workload = Workload(receivers=12, rooms=3, senders=0, chatty=True)
    with trio.fail_after(BOUND):
        async with running_server(make_config(tmp_path, rate_per_second=0)) as server:
            target = Target.parse(f"ws://127.0.0.1:{server.port}")
            plan = await make_plan("hibiki", target, workload)
            assert plan.receivers == [] and len(plan.senders) == 12
            assert plan.receiving() == 12
            options = SessionOptions(sample_every=1, server_pid=os.getpid(), progress=False)
            async with LoadSession(target, plan, options) as session:
                report = await session.run_phase(
                    Phase("open", rate=24, duration=1.0, messages=24, stagger=True)
                )
    assert report["receivers"] == 12
    assert report["sent"] == 24  # 2 from each of the 12 connections
    assert report["errors"]["error_frames"] == 0, report["errors"]
    assert report["errors"]["closed"] == 0, report["errors"]
    assert report["missing_deliveries"] == 0
    assert report["deliveries"] == report["expected_deliveries"] == 24 * 4
    assert report["latency_ms"]["samples"] == report["deliveries"]  # sample_every=1
    assert report["rtt_ms"]["samples"] == 24  # every sender saw the echo of each of its messages


@needs_node
def test_benchmark_runs_chatty_rooms_with_its_floor_table_and_plot(tmp_path: Path) -> None:
    """bench_fanout end to end in the chatty mode on hibiki and `websockets`: the floor, the
    runs, the table with the floor column, chatty.png."""
    if importlib.util.find_spec("websockets") is None:
        pytest.skip("websockets (the `bench` extra) is not installed")
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "bench_fanout.py"),
            *("--quick", "--modes", "chatty", "--servers", "hibiki,websockets"),
            *("--chatty-connections", "20", "--chatty-rooms", "4", "--chatty-rate", "40"),
            *("--floor-receivers", "20", "--floor-sweeps", "3", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    runs = json.loads((out / "runs.json").read_text())
    assert [r["server"] for r in runs] == ["hibiki", "websockets"]
    for run in runs:
        assert run["sent"] > 0
        assert run["deliveries"] == run["sent"] * 5  # 5 members per room, the sender included
        assert run["missing_deliveries"] == 0
        assert run["errors"]["error_frames"] == run["errors"]["closed"] == 0
        assert run["offered_deliveries_per_s"] == 40 * 5
    floor = json.loads((out / "floor.json").read_text())
    assert floor["receivers"] == 20 and floor["cpu_us_per_send"] > 0
    assert "÷ send floor" in done.stdout
    assert "| chatty | chatty 4x5 | hibiki |" in done.stdout
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "chatty.png").stat().st_size > 0


def test_report_divides_by_the_floor_and_plots_chatty_rooms(tmp_path: Path) -> None:
    def run(server: str, us: float) -> dict[str, Any]:
        return {
            "mode": "chatty",
            "workload": "chatty 100x50",
            "server": server,
            "receivers": 5000,
            "rooms": 100,
            "senders": 5000,
            "deliveries_per_s": 99_000.0,
            "offered_deliveries_per_s": 100_000.0,
            "server_cpu_us_per_delivery": us,
            "latency_ms": {"p50": 1.0, "p99": 2.0},
            "server_cpu_util": 0.5,
            "client_cpu_util": 0.3,
            "client_limited": False,
            "missing_deliveries": 0,
            "errors": {"error_frames": 0, "closed": 0},
        }

    rows = summarise([run("hibiki", 10.0), run("websockets", 30.0)])
    text = markdown(rows, "header", floor_us=5.0)
    assert "| chatty | chatty 100x50 | hibiki | 99,000 | 10.000 | 2.00x |" in text
    assert "| chatty | chatty 100x50 | websockets | 99,000 | 30.000 | 6.00x |" in text
    assert "offered 100,000/s" in text
    assert "| chatty | chatty 100x50 | websockets | 3.0x |" in text
    assert "| - |" not in markdown(rows, "header", floor_us=5.0)
    assert "| 10.000 | - |" in markdown(rows, "header")  # no floor measured: no ratio
    if importlib.util.find_spec("matplotlib") is not None:
        written = plot_chatty(rows, tmp_path, 5.0)
        assert [p.name for p in written] == ["chatty.png"]
        assert written[0].stat().st_size > 0
    assert plot_chatty([r | {"mode": "flood"} for r in rows], tmp_path / "none", 5.0) == []

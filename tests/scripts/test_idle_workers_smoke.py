"""Smoke test of scripts/bench_idle_workers.py: 60 idle connections over `hibiki serve --workers 3`
with a private redis-server, end to end in seconds; the report's fields and counts are checked,
the memory figure only for being there.

Without node or redis-server this skips, saying why; with CI=true their absence fails it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from _benchprocs import child_pids, connections_by_process, established_inodes, fd_count

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
BOUND = 120  # seconds; generous for a loaded 2-core machine


def require_tools() -> None:
    missing = [tool for tool in ("node", "redis-server") if shutil.which(tool) is None]
    if missing:
        why = f"{', '.join(missing)} not installed: the benchmark needs node and redis-server"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def test_children_and_descriptors_of_a_process_are_read_from_proc() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        assert child.pid in child_pids(os.getpid())
        assert fd_count(child.pid) >= 3  # stdin, stdout, stderr at least
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
    assert child_pids(child.pid) == []  # gone: no children, no error


def test_established_connections_are_counted_for_the_process_holding_them() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        accepted = [listener.accept()[0] for _ in clients]
        try:
            assert len(established_inodes(port)) == 3  # the server's sides only
            assert connections_by_process([os.getpid()], port) == {os.getpid(): 3}
        finally:
            for sock in clients + accepted:
                sock.close()


def test_bench_idle_workers_holds_checks_and_reports_connections(tmp_path: Path) -> None:
    require_tools()
    out = tmp_path / "idle.json"
    command = [sys.executable, str(SCRIPTS / "bench_idle_workers.py"), "--connections", "60"]
    command += ["--rooms", "3", "--warmup", "10", "--settle", "0.2", "--single", "0"]
    done = subprocess.run(
        [*command, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=BOUND,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| hibiki --workers 3 | 60 |" in done.stdout
    report = json.loads(out.read_text())
    assert report["fd_limit"] <= 20_000
    (result,) = report["results"]
    assert result["workers"] == 3 and result["supervisor_counted"]
    assert result["connections"] == 60 and result["failed"] == 0
    assert isinstance(result["kib_per_connection"], float)
    roles = [p["role"] for p in result["processes"]]
    assert roles == ["supervisor", "worker", "worker", "worker"]
    workers = [p for p in result["processes"] if p["role"] == "worker"]
    # 60 receivers and the sender, each held by exactly one worker.
    assert sum(p["connections"] for p in workers) == 61
    assert all(p["fds"] > 0 and p["rss_after_kib"] > 0 for p in result["processes"])
    assert result["live_on_every_worker"]
    live = result["live"]
    assert live["messages"] == 3
    assert live["deliveries"] == live["expected_deliveries"] == 60

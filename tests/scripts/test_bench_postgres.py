"""bench_fanout's `hibiki-pg` case: a tiny run of hibiki on a fresh PostgreSQL database (created
and dropped by the benchmark, its backends' CPU counted), and its rows set beside SQLite's in the
report rather than among the peers."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ..postgres import ADMIN_DB, admin_connection, database_url

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from _benchreport import markdown, summarise
from _loadplan import Workload
from _loadrun import Phase

needs_node = pytest.mark.skipif(
    shutil.which("node") is None,
    reason="node (Node.js) is not installed: the load generator's sockets live in Node workers",
)


def _bench_databases() -> set[str]:
    with admin_connection() as admin:
        rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'hibiki_bench_%'")
        return {str(row[0]) for row in rows}


@needs_node
def test_a_hibiki_pg_run_delivers_everything_counts_postgres_cpu_and_drops_its_database() -> None:
    from bench_fanout import Job, run_one

    before = _bench_databases()  # skips (or fails under CI=true) without PostgreSQL
    job = Job("flood", Workload(3, 1, 1), Phase("closed", window=2, messages=20, duration=5), 1)
    report = run_one("hibiki-pg", job, server_cpu=None, pg_admin=database_url(ADMIN_DB))
    assert report["server"] == "hibiki-pg"
    assert (report["sent"], report["deliveries"], report["missing_deliveries"]) == (20, 60, 0)
    assert report["extra_pids"], "no PostgreSQL backend served the run"
    total = report["server_cpu_s"] + report["extra_cpu_s"]  # hibiki's CPU and theirs
    assert report["total_cpu_s"] == pytest.approx(total, abs=0.002)
    assert _bench_databases() == before  # its database is gone


def test_an_unreachable_postgresql_fails_the_run_with_psycopgs_error() -> None:
    from bench_fanout import Job, run_one

    job = Job("flood", Workload(1, 1, 1), Phase("closed", window=1, messages=1, duration=1), 1)
    with pytest.raises(psycopg.OperationalError):
        run_one("hibiki-pg", job, None, pg_admin="postgresql://postgres@127.0.0.1:1/test")


def test_the_report_sets_postgresql_beside_sqlite_not_among_the_peers() -> None:
    def run(server: str, us: float, total: float, per_s: float, p99: float) -> dict[str, Any]:
        return {
            "mode": "flood",
            "workload": "N=50 S=1",
            "server": server,
            "receivers": 50,
            "rooms": 1,
            "senders": 1,
            "deliveries_per_s": per_s,
            "server_cpu_us_per_delivery": us,
            "total_cpu_us_per_delivery": total,
            "latency_ms": {"p50": 1.0, "p99": p99},
            "server_cpu_util": 0.99,
            "client_cpu_util": 0.5,
            "client_limited": False,
            "missing_deliveries": 0,
            "errors": {"error_frames": 0, "closed": 0},
        }

    runs = [run("hibiki", 2.0, 2.0, 100_000, 4.0), run("hibiki-pg", 3.0, 5.0, 80_000, 6.0)]
    runs.append(run("websockets", 20.0, 20.0, 10_000, 9.0))
    text = markdown(summarise(runs), "header")
    assert "| flood | N=50 S=1 | websockets | 10.0x |" in text
    assert "| flood | N=50 S=1 | hibiki-pg | 1.5x |" not in text  # not a peer
    assert "| flood | N=50 S=1 | 0.80x | 1.50x | 2.50x | 1.50x |" in text

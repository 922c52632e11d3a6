"""Smoke test of scripts/bench_migrate.py: a tiny run as a user would start it (a subprocess),
checking that it migrates, verifies and cleans up what it claims. Figures are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_migrate.py"
BOUND = 300  # seconds; generous for a loaded 2-core machine


def test_migration_benchmark_migrates_verifies_and_drops_its_databases(
    tmp_path: Path, pg_url: str
) -> None:
    out = tmp_path / "m.json"
    before = _bench_databases(pg_url)
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1])}
    done = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--messages", "3000", "--naive-sample", "500"),
            *("--chunk", "700", "--dir", str(tmp_path), "--json-out", str(out)),
            *("--pg", pg_url.rsplit("/", 1)[0]),  # the test server, wherever it is
        ],
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["messages"] == 3000
    assert figures["rerun_copied"] == 0  # the rerun found nothing new
    assert figures["migrate_msg_per_s"] > 0
    assert "ratios: copy pass / floor" in done.stdout
    assert _bench_databases(pg_url) <= before  # its four databases were dropped


def _bench_databases(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'hibiki_m_bench_%'"
        ).fetchall()
    return {name for (name,) in rows}

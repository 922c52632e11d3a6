"""scripts/bench_events.py as a user starts it, tiny: it finishes (every message committed and
appended, or it would not) and prints both rates. Figures are printed, never asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import coredis
import trio

from .conftest import URL

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_events.py"


async def test_event_benchmark_reports_the_append_rate_beside_the_commit_rate(
    redis: tuple[coredis.Redis[bytes], str],
) -> None:
    argv = [sys.executable, str(SCRIPT), "--messages", "2000", "--rooms", "10", "--redis", URL]
    with trio.fail_after(120):
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert b"append rate (same run)" in done.stdout
    assert b"commit rate, with stream" in done.stdout

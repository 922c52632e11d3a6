"""Smoke tests of the storage and floor benchmarks in scripts/: tiny runs as a user would start
them (a subprocess each, since the floor benchmark pins CPUs and forks a reader), checking that
they store and send what they claim. Figures are printed, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..postgres import ADMIN_DB, admin_connection, database_url

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
BOUND = 120  # seconds; generous for a loaded 2-core machine


def _run(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=BOUND, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_floor_benchmark_measures_sends_commits_and_inserts(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    text = _run(
        str(SCRIPTS / "bench_floor.py"),
        *("--receivers", "20", "--sweeps", "3", "--gap-ms", "1"),
        *("--commits", "5", "--commit-gap-ms", "1"),
        *("--messages", "3000", "--batch", "500", "--rounds", "1"),
        *("--dir", str(tmp_path), "--json-out", str(out)),
    )
    results = json.loads(out.read_text())
    assert set(results) == {"send", "commit", "insert"}
    assert results["send"]["receivers"] == 20
    assert results["send"]["frame_bytes"] > 100  # a real message frame, not a token byte
    assert results["send"]["cpu_us_per_send"] > 0
    commit = results["commit"]
    assert 0 < commit["paced_sqlite_commit_ms_p50"] <= commit["paced_sqlite_commit_ms_p99"]
    # The script exits non-zero unless each run stored every row, so reaching here means both did.
    assert results["insert"]["hibiki_schema_msg_per_s"] > 0
    assert results["insert"]["bare_table_msg_per_s"] > 0
    assert "µs CPU per loopback send()" in text
    assert not list(tmp_path.glob("hibiki-floor-*")), "its temporary files were left behind"


def test_floor_benchmark_rejects_an_unknown_part() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_floor.py"), "--parts", "send,disk"],
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert done.returncode != 0
    assert "unknown part(s): disk" in done.stderr


def test_storage_benchmark_stores_every_message(tmp_path: Path) -> None:
    text = _run(
        str(SCRIPTS / "bench_storage.py"),
        *("--messages", "2000", "--batch", "500", "--single", "20", "--rounds", "1"),
        *("--rooms", "4", "--senders", "2", "--dir", str(tmp_path)),
    )
    # It exits non-zero when a run stored a different number of messages than it sent.
    assert "group commit" in text
    assert "ratio" in text


def test_storage_benchmark_on_both_backends_stores_every_message_and_drops_its_databases(
    tmp_path: Path,
) -> None:
    admin = admin_connection()  # skips (fails under CI=true) without PostgreSQL
    try:
        text = _run(
            str(SCRIPTS / "bench_storage.py"),
            *("--backend", "both", "--pg-url", database_url(ADMIN_DB)),
            *("--messages", "2000", "--batch", "500", "--single", "20", "--rounds", "1"),
            *("--rooms", "4", "--senders", "2", "--dir", str(tmp_path)),
        )
        assert "round 1 postgresql" in text and "round 1 sqlite" in text
        assert "group commit, PostgreSQL / SQLite" in text
        left = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'hibiki_bench_%'")
        assert left.fetchall() == []
    finally:
        admin.close()


def test_instruction_benchmark_scenarios_run_and_deliver_everything() -> None:
    # Without valgrind (it takes a minute): the two scenarios it counts, which check themselves.
    for kind in ("hibiki", "bare"):
        _run(
            str(SCRIPTS / "bench_fanout_instructions.py"),
            *("--run", kind, "--receivers", "50", "--messages", "5"),
        )


def test_inbound_instruction_benchmark_scenarios_handle_every_frame() -> None:
    # Without valgrind: each read path runs its frames through hibiki's read step and checks
    # that every one reached the session.
    for kind in ("wsproto", "fast"):
        _run(
            str(SCRIPTS / "bench_inbound_instructions.py"),
            *("--run", kind, "--per-recv", "5", "--messages", "10"),
        )


def test_append_instruction_benchmark_appends_numbered_messages() -> None:
    # Without valgrind: the loop it counts, which checks each append's seq itself.
    _run(str(SCRIPTS / "bench_append_instructions.py"), *("--run", "5"))


def test_light_profile_counts_task_steps_and_calls_per_message() -> None:
    text = _run(
        str(SCRIPTS / "profile_light.py"),
        *("--receivers", "2", "--warmup", "2", "--messages", "5", "--top", "5"),
    )
    assert "task steps per message: " in text
    # The tasks' steps are counted by name: at light load only the reader's remain (a lone send
    # is committed and delivered in its turn).
    assert "Listener._handle" in text
    assert "function calls per message: " in text


def test_instruction_benchmark_light_mode_runs_one_message_at_a_time_through_a_server() -> None:
    # The CPU run only (callgrind takes minutes): every message is acked and reaches everyone.
    text = _run(
        str(SCRIPTS / "bench_fanout_instructions.py"),
        *("--light", "--receivers", "3", "--cpu-messages", "20", "--light-messages", "0"),
    )
    assert "light, N=3: " in text and "ms server CPU per message" in text


def test_large_frame_benchmark_sends_whole_messages_with_both_peers() -> None:
    # The reader exits non-zero unless every message arrived whole, and the sender waits for it.
    text = _run(str(SCRIPTS / "bench_large_frames.py"), *("--sizes", "1", "--repeats", "2"))
    assert "1 MiB     hibiki" in text
    assert "1 MiB websockets" in text


def test_login_benchmark_times_the_users_logins_while_a_flood_is_throttled(tmp_path: Path) -> None:
    out = tmp_path / "login.json"
    _run(
        str(SCRIPTS / "bench_login.py"),
        *("--variants", "shipped", "--logins", "3", "--flood", "6", "--flood-addresses", "2"),
        *("--warmup", "0.5", "--scrypt-n", "1024", "--json-out", str(out)),
    )
    phases = json.loads(out.read_text())["variants"]["shipped"]
    assert set(phases) == {
        "quiet",
        "healthz flood, 1 address",
        "flood, 1 address",
        "flood, 2 addresses",
    }
    for phase in phases.values():
        assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"]
    # The script exits non-zero if one of the user's logins is refused; the flood's were.
    assert phases["flood, 1 address"]["flood_answers"]["429"] > 0


def test_batching_benchmark_reads_the_writers_batches_after_a_flood() -> None:
    text = _run(
        str(SCRIPTS / "bench_batching.py"),
        *("--runs", "1", "--receivers", "20", "--rooms", "2", "--senders", "2"),
        *("--window", "8", "--duration", "1"),
    )
    [line] = [line for line in text.splitlines() if line.startswith("run 1: ")]
    batch = float(line.split()[2])
    assert batch >= 1.0  # a mean of real batches, read from /metrics

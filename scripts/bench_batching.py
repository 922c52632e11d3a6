"""How well hibiki's writer coalesces a many-rooms flood: messages per group commit, per run.

Coalescing is what makes 100 rooms x 50 cheap: every room's frames of one batch share one
send() per receiver in the sweep after it, so a batch twice as large is about half the sends per
delivery. This runs that flood (`scripts/loadgen.py`, closed loop) against a fresh `hibiki serve`
pinned to `--server-cpu`, `--runs` times, and prints per run the writer's mean batch
(`hibiki_writer_batch_size` from /metrics) beside the server's CPU per delivery. Pass a checkout
with `--root` to measure another version (e.g. `git archive` of a base) in the same session.

    python scripts/bench_batching.py --runs 3
    python scripts/bench_batching.py --root /tmp/base --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchservers import start_server

ROOT = Path(__file__).resolve().parent.parent


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"/metrics has no {name}")
    return float(match.group(1))


def one_run(args: argparse.Namespace, root: Path) -> tuple[float, float]:
    """(mean messages per batch, server µs of CPU per delivery) of one flood."""
    with tempfile.TemporaryDirectory(prefix="hibiki-batching-") as tmp:
        server = start_server("hibiki", Path(tmp), cpu=args.server_cpu)
        try:
            out = Path(tmp) / "load.json"
            command = [sys.executable, str(root / "scripts" / "loadgen.py")]
            command += ["--url", f"ws://127.0.0.1:{server.port}", "--quiet"]
            command += ["--receivers", str(args.receivers), "--rooms", str(args.rooms)]
            command += ["--senders", str(args.senders), "--window", str(args.window)]
            command += ["--duration", str(args.duration), "--json-out", str(out)]
            command += ["--server-pid", str(server.process.pid)]
            command += ["--server-cpu", str(args.server_cpu)]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{server.port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                metrics = response.read().decode()
        finally:
            server.stop()
        load = json.loads(out.read_text())
    total = _metric(metrics, "hibiki_writer_batch_size_sum")
    batches = _metric(metrics, "hibiki_writer_batch_size_count")
    return total / max(batches, 1.0), float(load["server_cpu_us_per_delivery"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the hibiki checkout to run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--receivers", type=int, default=5000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--window", type=int, default=128, help="messages in flight per sender")
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--server-cpu", type=int, default=0)
    args = parser.parse_args()
    root = args.root.resolve()
    # The server (this venv's `hibiki`) imports its packages from PYTHONPATH first.
    os.environ["PYTHONPATH"] = str(root)
    print(f"{args.rooms} rooms, {args.receivers} receivers, {args.senders} senders, {root}")
    for run in range(args.runs):
        batch, us = one_run(args, root)
        print(f"run {run + 1}: {batch:.1f} messages per batch, {us:.3f} µs per delivery")


if __name__ == "__main__":
    main()

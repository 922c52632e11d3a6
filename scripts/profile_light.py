"""Where a light-load message goes in Python: task steps and function calls per message.

Callgrind (scripts/bench_fanout_instructions.py --light) counts a message's instructions but
sees the CPython interpreter, not our functions. This runs the same light load
(scripts/_lightload.py: one message at a time to `--receivers` connections) against a
`hibiki serve` whose trio run carries an instrument counting task steps per task, and whose
Python calls are profiled (cProfile) only between the warm-up and the end: both are divided by
the messages sent. Call counts are exact; cProfile's times are inflated by its own overhead, so
read them as a ranking.

    python scripts/profile_light.py --receivers 10 --messages 300 --top 40
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import os
import pstats
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

_STATS = "PROFILE_LIGHT_OUT"  # not HIBIKI_*: the config reads those


class TaskSteps(trio.abc.Instrument):
    """Counts each task's steps (by its coroutine's name) while `on` is set."""

    def __init__(self) -> None:
        self.on = False
        self.steps: collections.Counter[str] = collections.Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self.steps[task.coro.cr_code.co_qualname] += 1


def serve_profiled(argv: list[str]) -> int:
    """`hibiki serve argv`: SIGUSR1 starts counting, SIGUSR2 stops and writes the counts."""
    from server import cli

    steps = TaskSteps()
    profile = cProfile.Profile()
    out = Path(os.environ[_STATS])

    def start(*_: object) -> None:
        steps.steps.clear()
        steps.on = True
        profile.enable()

    def stop(*_: object) -> None:
        profile.disable()
        steps.on = False
        profile.dump_stats(str(out.with_suffix(".prof")))
        out.write_text(json.dumps(dict(steps.steps)))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    real_run = trio.run

    def run_instrumented(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("instruments", [steps])
        return real_run(*args, **kwargs)

    trio.run = run_instrumented  # type: ignore[assignment]
    return cli.main(["serve", *argv])


def profile(receivers: int, warmup: int, messages: int, top: int) -> None:
    import _lightload

    with tempfile.TemporaryDirectory(prefix="hibiki-profile-") as tmp:
        out = Path(tmp, "steps.json")
        os.environ[_STATS] = str(out)
        real_popen = _lightload.subprocess.Popen

        def popen(command: list[str], **kwargs: Any) -> Any:  # `hibiki serve` -> ours
            serve_args = command[command.index("serve") + 1 :]
            return real_popen([sys.executable, __file__, "--serve", *serve_args], **kwargs)

        _lightload.subprocess.Popen = popen  # type: ignore[assignment]
        server = _lightload.start(Path(tmp), callgrind=False, timeout=30)
        pid = server.process.pid

        def mark(_server: object, *, start: bool) -> float:
            os.kill(pid, signal.SIGUSR1 if start else signal.SIGUSR2)
            return 0.0

        _lightload._mark = mark  # type: ignore[assignment]
        try:
            trio.run(_lightload.drive, server, receivers, warmup, messages)
        finally:
            server.process.terminate()
            server.process.wait(60)
        steps: dict[str, int] = json.loads(out.read_text())
        stats = pstats.Stats(str(out.with_suffix(".prof")), stream=io.StringIO())
        if os.environ.get("PROFILE_LIGHT_KEEP"):
            stats.dump_stats(os.environ["PROFILE_LIGHT_KEEP"])
    total = sum(steps.values())
    print(f"task steps per message: {total / messages:.2f}")
    for name, count in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"  {count / messages:7.2f}  {name}")
    calls = sum(s[1] for s in stats.stats.values())  # type: ignore[attr-defined]
    print(f"function calls per message: {calls / messages:.1f} (top {top} by calls)")
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][1])  # type: ignore[attr-defined]
    for (path, line, name), (_cc, nc, tt, _ct, _callers) in rows[:top]:
        where = f"{Path(path).name}:{line}" if line else path
        print(f"  {nc / messages:7.2f}  {tt / messages * 1e6:7.1f} us  {name}  {where}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        raise SystemExit(serve_profiled(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    profile(args.receivers, args.warmup, args.messages, args.top)


if __name__ == "__main__":
    main()

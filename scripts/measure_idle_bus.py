"""What an idle `hibiki serve --redis` costs: CPU of hibiki and of its redis-server, store calls
and Redis commands per second, with N live rooms (one user in N rooms, one WebSocket) and no
traffic. For the tail check (one store read per idle room, or one per interval) and whatever
else talks to Redis while nothing happens (keepalive PINGs, presence heartbeats).

    PYTHONPATH=$PWD python scripts/measure_idle_bus.py --rooms 1000 --seconds 20

Both processes are private (their own redis-server on a free port, a temporary database), so
`INFO commandstats` and the CPU counted are theirs alone. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchredis import start_redis
from _benchservers import start_server

from client import open_websocket

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def commandstats(port: int) -> dict[str, int]:
    """Calls per command so far, from `redis-cli info commandstats` on `port`."""
    done = subprocess.run(
        ["redis-cli", "-p", str(port), "info", "commandstats"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {name: int(n) for name, n in re.findall(r"cmdstat_([^:]+):calls=(\d+)", done.stdout)}


def rates(after: dict[str, Any], before: dict[str, Any], elapsed: float) -> dict[str, float]:
    """Per second, the counts that changed."""
    names = sorted(set(after) | set(before))
    return {
        k: round((after.get(k, 0) - before.get(k, 0)) / elapsed, 2)
        for k in names
        if after.get(k, 0) != before.get(k, 0)
    }


def store_calls(metrics: str) -> dict[str, float]:
    pattern = r'db_query_duration_seconds_count\{query_type="([^"]+)"\} ([0-9.e+]+)'
    return {name: float(n) for name, n in re.findall(pattern, metrics)}


async def measure(
    args: argparse.Namespace, http_url: str, ws_url: str, pids: dict[str, int], redis_port: int
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=http_url, timeout=30) as http:
        reply = await http.post("/api/register", json={"name": "idle", "password": "correct horse"})
        token = reply.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        for i in range(args.rooms):
            (await http.post("/api/rooms", json={"name": f"r{i}"}, headers=auth)).raise_for_status()
        async with open_websocket(ws_url) as ws:
            await ws.send_message(json.dumps({"type": "hello", "token": token}))
            while json.loads(await ws.get_message())["type"] != "welcome":
                pass
            await trio.sleep(args.settle)
            before_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            before_cmd = commandstats(redis_port)
            before_store = store_calls((await http.get("/metrics")).text)
            started = time.monotonic()
            await trio.sleep(args.seconds)
            elapsed = time.monotonic() - started
            after_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            after_cmd = commandstats(redis_port)
            after_store = store_calls((await http.get("/metrics")).text)
    return {
        "rooms": args.rooms,
        "tail_check_interval": args.tail_interval,
        "seconds": round(elapsed, 2),
        "cpu_ms_per_s": {
            k: round(1000 * (after_cpu[k] - before_cpu[k]) / elapsed, 2) for k in pids
        },
        "redis_calls_per_s": rates(after_cmd, before_cmd, elapsed),
        "store_calls_per_s": rates(after_store, before_store, elapsed),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--tail-interval", type=float, default=2.0)
    args = parser.parse_args(argv)
    os.environ["HIBIKI_BUS_TAIL_CHECK_INTERVAL"] = str(args.tail_interval)
    with tempfile.TemporaryDirectory(prefix="idle-bus-") as tmp:
        work = Path(tmp)
        redis = start_redis(work / "redis")
        try:
            server = start_server("hibiki", work / "hibiki", redis_url=redis.url())
            try:
                pids = {"hibiki": server.pid, "redis": redis.pid}
                http_url = f"http://127.0.0.1:{server.port}"
                result = trio.run(measure, args, http_url, f"{server.url}/ws", pids, redis.port)
            finally:
                server.stop()
        finally:
            redis.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

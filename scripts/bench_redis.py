"""Redis as hibiki's bus: messages/s through one private redis-server with hibiki's payloads (a
`message` event's JSON, 200 B and 2 KB by default), from one coredis publisher (pipelined, and
optionally several events packed in one PUBLISH, as a bus flushing a commit batch would) to 1
and 2 subscriber processes (coredis, as each hibiki process would run one), beside what
`redis-benchmark` publishes on the same server in the same run, and the ratio.

    python scripts/bench_redis.py                            # about a minute
    python scripts/bench_redis.py --messages 20000 --sizes 200 --subscribers 1 --batch 1

Each figure is a fresh run: the subscribers subscribe (checked with PUBSUB NUMSUB), then the
publisher sends every message; messages/s is counted from the first PUBLISH to the last
message received by the slowest subscriber. CPU per message is read from /proc for
redis-server and reported by each client process. The pub/sub output buffer limit is lifted on
this private server so a subscriber that falls behind the flood is not disconnected.

Unpinned by default: with one pipelined connection the rate is bound by round trips, and on a
busy 2-CPU VM a wake-up on the other CPU costs far more than a switch on the same one
(redis-benchmark -c 1 -P 16 measured 90k publishes/s across CPUs, 1.1M on one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import coredis
import trio
from _benchredis import RedisProcess, start_redis
from _loadstats import cpu_seconds, self_cpu_seconds

from protocol import Message, encode

CHANNEL = "hibiki-bench"
SUBSCRIBER_TIMEOUT = 120.0  # seconds a subscriber waits for the rest once the first arrives


def message_payload(size: int) -> bytes:
    """A hibiki `message` event's JSON of about `size` bytes (the text is padded to fit)."""
    bare = Message(room="general", id=123_456, seq=7_890, user="alice", text="", ts=1, client_id="")
    event = Message(
        room="general",
        id=123_456,
        seq=7_890,
        user="alice",
        text="x" * max(0, size - len(encode(bare)) - 12 - 36),
        ts=int(time.time() * 1000),
        client_id="0193b2c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d",
    )
    payload: bytes = encode(event)
    return payload


def batch_payloads(frame: bytes, messages: int, batch: int) -> list[bytes]:
    """`messages` frames packed `batch` to a PUBLISH (newline-separated: JSON has no raw one)."""
    full, rest = divmod(messages, batch)
    payloads = [b"\n".join([frame] * batch)] * full
    if rest:
        payloads.append(b"\n".join([frame] * rest))
    return payloads


# --- subscriber process -------------------------------------------------------------------


async def subscribe(port: int, channel: str, expect: int) -> dict[str, Any]:
    """Count messages (frames inside each PUBLISH) until `expect`; say `ready` once subscribed."""
    got, first, last = 0, 0.0, 0.0
    client = coredis.Redis(host="127.0.0.1", port=port)
    async with (
        client,
        client.pubsub(channels=[channel], ignore_subscribe_messages=True) as pubsub,
    ):
        cpu0 = self_cpu_seconds()  # from here on: not the interpreter's start-up
        print("ready", flush=True)
        with trio.move_on_after(SUBSCRIBER_TIMEOUT * 10) as waiting:
            async for message in pubsub:
                data = message["data"]
                if not got:
                    first = time.monotonic()
                    waiting.deadline = trio.current_time() + SUBSCRIBER_TIMEOUT
                got += data.count(b"\n") + 1 if isinstance(data, bytes) else 1
                if got >= expect:
                    break
            last = time.monotonic()
    return {"received": got, "first": first, "last": last, "cpu_s": self_cpu_seconds() - cpu0}


def subscriber_main(port: int, channel: str, expect: int) -> int:
    print(json.dumps(trio.run(subscribe, port, channel, expect)), flush=True)
    return 0


# --- driver ------------------------------------------------------------------------------


@dataclass
class Subscribers:
    """Subscriber processes (this script with `--subscriber`), each counting `expect`."""

    processes: list[trio.Process]

    @classmethod
    async def start(cls, count: int, port: int, expect: int) -> Subscribers:
        command = [sys.executable, __file__, "--subscriber", str(port), CHANNEL, str(expect)]
        procs = []
        for _ in range(count):
            proc = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
            procs.append(proc)
        subscribers = cls(procs)
        for proc in procs:
            line = await _read_line(proc)
            if line != b"ready":
                await subscribers.kill()
                raise RuntimeError(f"subscriber did not start: {line!r}")
        return subscribers

    async def results(self) -> list[dict[str, Any]]:
        out = []
        for proc in self.processes:
            with trio.fail_after(SUBSCRIBER_TIMEOUT + 30):
                out.append(json.loads(await _read_line(proc)))
                await proc.wait()
        return out

    async def kill(self) -> None:
        for proc in self.processes:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def _read_line(proc: trio.Process) -> bytes:
    assert proc.stdout is not None
    data = b""
    while not data.endswith(b"\n"):
        chunk = await proc.stdout.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return data.strip()


async def _check_subscribed(client: coredis.Redis[bytes], count: int) -> None:
    """Each subscriber said `ready` after Redis confirmed its SUBSCRIBE: Redis must count them."""
    found = (await client.pubsub_numsub(CHANNEL)).get(CHANNEL.encode(), 0)
    if found != count:
        raise RuntimeError(f"{found} subscribers on {CHANNEL}, expected {count}")


def _delivery(
    subs: list[dict[str, Any]], t0: float, messages: int, redis_cpu: float
) -> dict[str, Any]:
    """End-to-end figures of one run: the slowest subscriber decides the rate."""
    if not subs:
        return {
            "all_received": True,
            "received_min": None,
            "delivered_s": None,
            "msgs_per_s": None,
            "redis_cpu_us_per_msg": round(redis_cpu * 1e6 / messages, 3),
            "subscriber_cpu_us_per_msg": None,
        }
    done = max(s["last"] for s in subs) - t0
    received = min(s["received"] for s in subs)
    return {
        "all_received": received >= messages,
        "received_min": received,
        "delivered_s": round(done, 4),
        "msgs_per_s": round(received / done, 1) if done > 0 else None,
        "redis_cpu_us_per_msg": round(redis_cpu * 1e6 / messages, 3),
        "subscriber_cpu_us_per_msg": round(
            sum(s["cpu_s"] for s in subs) * 1e6 / (messages * len(subs)), 3
        ),
    }


async def bus_run(
    redis: RedisProcess, size: int, subscribers: int, batch: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One coredis publisher, `args.pipeline` PUBLISHes per round trip, `batch` events each."""
    payloads = batch_payloads(message_payload(size), args.messages, batch)
    subs = await Subscribers.start(subscribers, redis.port, args.messages)
    try:
        client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=redis.port)
        async with client:
            await _check_subscribed(client, subscribers)
            redis0, self0 = cpu_seconds(redis.pid), self_cpu_seconds()
            t0 = time.monotonic()
            for i in range(0, len(payloads), args.pipeline):
                async with client.pipeline(transaction=False) as pipe:
                    for payload in payloads[i : i + args.pipeline]:
                        pipe.publish(CHANNEL, payload)
            published = time.monotonic() - t0
            publisher_cpu = self_cpu_seconds() - self0
            results = await subs.results()
            redis_cpu = cpu_seconds(redis.pid) - redis0
    finally:
        await subs.kill()
    return {
        "client": "coredis",
        "size": size,
        "payload_bytes": len(message_payload(size)),
        "subscribers": subscribers,
        "batch": batch,
        "pipeline": args.pipeline,
        "messages": args.messages,
        "publishes": len(payloads),
        "publish_msgs_per_s": round(args.messages / published, 1),
        "publisher_cpu_us_per_msg": round(publisher_cpu * 1e6 / args.messages, 3),
        **_delivery(results, t0, args.messages, redis_cpu),
    }


async def redis_benchmark_run(
    redis: RedisProcess, size: int, subscribers: int, args: argparse.Namespace
) -> dict[str, Any]:
    """`redis-benchmark ... publish CHANNEL PAYLOAD` with the same subscribers attached."""
    payload = message_payload(size).decode()
    command = [str(shutil.which("redis-benchmark")), "-h", "127.0.0.1", "-p", str(redis.port)]
    command += ["-n", str(args.messages), "-P", str(args.rb_pipeline), "-c", str(args.rb_clients)]
    command += ["--csv", "publish", CHANNEL, payload]
    subs = await Subscribers.start(subscribers, redis.port, args.messages)
    try:
        client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=redis.port)
        async with client:
            await _check_subscribed(client, subscribers)
        redis0 = cpu_seconds(redis.pid)
        t0 = time.monotonic()
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
        results = await subs.results()
        redis_cpu = cpu_seconds(redis.pid) - redis0
    finally:
        await subs.kill()
    # CSV: "test","rps",... seven figures; the test's name (our JSON) holds quotes of its own.
    rows = [line.rsplit('","', 7) for line in done.stdout.decode().splitlines()[1:] if line]
    return {
        "client": "redis-benchmark",
        "size": size,
        "payload_bytes": len(payload),
        "subscribers": subscribers,
        "batch": 1,
        "pipeline": args.rb_pipeline,
        "clients": args.rb_clients,
        "messages": args.messages,
        "publish_msgs_per_s": float(rows[0][1]) if rows else None,
        "command": " ".join([*command[:-1], f"<{len(payload)}-byte message JSON>"]),
        **_delivery(results, t0, args.messages, redis_cpu),
    }


# --- report --------------------------------------------------------------------------------


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(run: dict[str, Any], base: dict[str, Any] | None, key: str) -> float | None:
    if base is None or run["client"] == base["client"] or not run[key] or not base[key]:
        return None
    ratio: float = run[key] / base[key]
    return ratio


def table(runs: list[dict[str, Any]]) -> str:
    """Every run, and its publish and delivered rates ÷ redis-benchmark's with the same payload
    and subscribers. "Redis-bound" is what one CPU of redis-server alone would carry at the
    run's CPU per message (10 ms /proc ticks: coarse for short runs)."""
    lines = [
        "| payload B | subscribers | publisher | events per PUBLISH | publish msgs/s "
        "| delivered msgs/s | redis µs/msg | publisher µs/msg | subscriber µs/msg "
        "| Redis-bound msgs/s | publish ÷ redis-benchmark | delivered ÷ redis-benchmark |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    bench = {(r["size"], r["subscribers"]): r for r in runs if r["client"] == "redis-benchmark"}
    for r in runs:
        base = bench.get((r["size"], r["subscribers"]))
        missing = "" if r["all_received"] else f" (only {r['received_min']:,})"
        bound = 1e6 / r["redis_cpu_us_per_msg"] if r["redis_cpu_us_per_msg"] else None
        lines.append(
            f"| {r['payload_bytes']} | {r['subscribers']} | {r['client']} | {r['batch']} "
            f"| {_f(r['publish_msgs_per_s'], ',.0f')} | {_f(r['msgs_per_s'], ',.0f')}{missing} "
            f"| {_f(r['redis_cpu_us_per_msg'], '.2f')} "
            f"| {_f(r.get('publisher_cpu_us_per_msg'), '.2f')} "
            f"| {_f(r['subscriber_cpu_us_per_msg'], '.2f')} | {_f(bound, ',.0f')} "
            f"| {_f(_ratio(r, base, 'publish_msgs_per_s'), '.3f')} "
            f"| {_f(_ratio(r, base, 'msgs_per_s'), '.3f')} |"
        )
    return "\n".join(lines) + "\n"


async def run_all(redis: RedisProcess, args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    for size in args.sizes:
        for subscribers in args.subscribers:
            for batch in args.batch:
                runs.append(await bus_run(redis, size, subscribers, batch, args))
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
            if shutil.which("redis-benchmark"):
                runs.append(await redis_benchmark_run(redis, size, subscribers, args))
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    return runs


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000, help="per run")
    parser.add_argument("--sizes", type=_ints, default=[200, 2048], help="payload bytes")
    parser.add_argument(
        "--subscribers", type=_ints, default=[0, 1, 2], help="subscriber processes (0: none)"
    )
    parser.add_argument("--batch", type=_ints, default=[1, 16], help="events per PUBLISH")
    parser.add_argument("--pipeline", type=int, default=64, help="PUBLISHes per round trip")
    parser.add_argument("--rb-pipeline", type=int, default=16, help="redis-benchmark -P")
    parser.add_argument("--rb-clients", type=int, default=1, help="redis-benchmark -c")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="redis-server on the first CPU, the clients on the others (default: unpinned)",
    )
    parser.add_argument("--json-out", type=Path, help="also write every run here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--subscriber"]:
        return subscriber_main(int(argv[1]), argv[2], int(argv[3]))
    args = parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    redis_cpu = cpus[0] if args.pin and len(cpus) > 1 else None
    if redis_cpu is not None:
        os.sched_setaffinity(0, set(cpus) - {redis_cpu})  # the subscribers inherit it
    if not shutil.which("redis-benchmark"):
        print("bench_redis: redis-benchmark not found: its figures are left out", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        redis = start_redis(Path(tmp), cpu=redis_cpu, unlimited_pubsub=True)
        try:
            runs = trio.run(run_all, redis, args)
        finally:
            redis.stop()
    where = (
        f"redis-server on CPU {redis_cpu}, the clients on the others"
        if redis_cpu is not None
        else "processes unpinned"
    )
    print(f"Redis as the bus: {args.messages:,} messages per run, {where}")
    print()
    print(table(runs))
    if args.json_out:
        args.json_out.write_text(json.dumps(runs, indent=1) + "\n")
    return 0 if all(r["all_received"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

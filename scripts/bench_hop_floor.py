"""The floor under issue #11's cross-node latency target, with none of hibiki's code timed: how
much later the receivers of a second process get a message than those of the first, when the
only work is one Redis PUBLISH and two sweeps of loopback `send()`s.

Two plain Python processes A and B and a private redis-server, all on one CPU in the `one`
layout (as `bench_cluster.py` pins two hibiki processes and Redis); the readers of the
deliveries on the other CPU. Every `--gap-ms`, A stamps a message with CLOCK_MONOTONIC,
PUBLISHes it over a raw RESP socket and sends it as one frame to each of its `--receivers`
sockets (order `before`; order `after` sends first, then publishes); B, subscribed, sends each
message it gets to each of its own sockets. A reader process per side records, per socket,
receive time - stamp: same-process (A's sockets) and cross-process (B's) p50/p99 and their
difference. Layout `split` puts A and Redis on one CPU and B on the other, each side's reader on
the other side's CPU (the readers then share a CPU with a sender).

    python scripts/bench_hop_floor.py                        # 4 variants x 200 messages, ~3 min
    python scripts/bench_hop_floor.py --orders before --layouts one --messages 50
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import struct
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchredis import RedisProcess, start_redis
from _loadstats import raise_fd_limit

ORDERS = ("before", "after")
LAYOUTS = ("one", "split")
CHANNEL = b"hop"
HEADER = struct.Struct("<qq")  # message index (-1: the end), CLOCK_MONOTONIC stamp in ns
FRAME_BYTES = 165  # the size of one hibiki message frame (bench_floor.sample_frame)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", type=int, default=500, help="sockets per process")
    parser.add_argument("--messages", type=int, default=200, help="messages per variant")
    parser.add_argument("--warmup", type=int, default=5, help="first messages not counted")
    parser.add_argument("--gap-ms", type=float, default=200.0, help="pause between messages")
    parser.add_argument("--frame-bytes", type=int, default=FRAME_BYTES)
    parser.add_argument("--orders", default=",".join(ORDERS), help="publish before/after sends")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="one CPU, or A and B split")
    parser.add_argument("--json-out", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    args.orders = _choices(args.orders, ORDERS, "order")
    args.layouts = _choices(args.layouts, LAYOUTS, "layout")
    if args.frame_bytes < HEADER.size:
        parser.error(f"--frame-bytes must be at least {HEADER.size}")
    return args


def _choices(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    chosen = [v for v in value.split(",") if v]
    if unknown := set(chosen) - set(allowed):
        raise SystemExit(f"unknown {what}(s): {', '.join(sorted(unknown))}")
    return chosen


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("redis closed the connection")
        data += chunk
    return data


def _frame(index: int, frame_bytes: int) -> bytes:
    return HEADER.pack(index, time.monotonic_ns()).ljust(frame_bytes, b"x")


# the processes (forked; each ends with os._exit) ------------------------------------------------
def _reader(socks: list[socket.socket], args: argparse.Namespace, out: Path, cpu: int) -> None:
    """Drain one side's sockets until EOF; per complete frame, receive time - stamp in µs."""
    os.sched_setaffinity(0, {cpu})
    poller = select.epoll()
    by_fd: dict[int, tuple[socket.socket, bytearray]] = {}
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = (sock, bytearray())
    latencies = array("d")
    size = args.frame_bytes
    while by_fd:
        for fd, _ in poller.poll():
            sock, pending = by_fd[fd]
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                continue
            now = time.monotonic_ns()
            if not data:
                poller.unregister(fd)
                sock.close()
                del by_fd[fd]
                continue
            pending += data
            while len(pending) >= size:
                index, stamp = HEADER.unpack_from(pending)
                if index >= args.warmup:
                    latencies.append((now - stamp) / 1000)
                del pending[:size]
    out.write_bytes(latencies.tobytes())


def _publisher(
    socks: list[socket.socket],
    args: argparse.Namespace,
    port: int,
    order: str,
    b_ready: int,
    out: Path,
) -> None:
    """A: every gap, one PUBLISH (reply read after the sends) and one sweep of sends; records
    how long each sweep took in µs (what the last of A's receivers waits at least)."""
    redis = socket.create_connection(("127.0.0.1", port))
    redis.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if os.read(b_ready, 1) != b"r":
        raise SystemExit("hop: B did not subscribe")
    gap = args.gap_ms / 1000
    sweeps = array("d")
    start = time.monotonic() + gap
    for index in range(args.messages):
        time.sleep(max(0.0, start + index * gap - time.monotonic()))  # the load's pace
        frame = _frame(index, args.frame_bytes)
        if order == "before":
            redis.sendall(_resp(b"PUBLISH", CHANNEL, frame))
        swept = time.monotonic_ns()
        for sock in socks:
            sock.send(frame)
        if index >= args.warmup:
            sweeps.append((time.monotonic_ns() - swept) / 1000)
        if order == "after":
            redis.sendall(_resp(b"PUBLISH", CHANNEL, frame))
        if _recv_exactly(redis, 4) != b":1\r\n":
            raise SystemExit("hop: the PUBLISH did not reach exactly one subscriber")
    redis.sendall(_resp(b"PUBLISH", CHANNEL, _frame(-1, args.frame_bytes)))
    _recv_exactly(redis, 4)
    redis.close()
    out.write_bytes(sweeps.tobytes())


def _subscriber(
    socks: list[socket.socket], args: argparse.Namespace, port: int, ready: int, out: Path
) -> None:
    """B: on each message from Redis, one sweep of sends; records publish → B's wake-up in µs."""
    redis = socket.create_connection(("127.0.0.1", port))
    redis.sendall(_resp(b"SUBSCRIBE", CHANNEL))
    confirm = b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(CHANNEL), CHANNEL)
    if _recv_exactly(redis, len(confirm)) != confirm:
        raise SystemExit("hop: unexpected SUBSCRIBE reply")
    os.write(ready, b"r")
    prefix = b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n" % (
        len(CHANNEL),
        CHANNEL,
        args.frame_bytes,
    )
    total = len(prefix) + args.frame_bytes + 2
    hops = array("d")
    while True:
        push = _recv_exactly(redis, total)
        woke = time.monotonic_ns()
        if not push.startswith(prefix):
            raise SystemExit(f"hop: unexpected push {push[:40]!r}")
        frame = push[len(prefix) : -2]
        index, stamp = HEADER.unpack_from(frame)
        if index < 0:
            break
        for sock in socks:
            sock.send(frame)
        if index >= args.warmup:
            hops.append((woke - stamp) / 1000)
    redis.close()
    out.write_bytes(hops.tobytes())


def _fork(
    cpu: int,
    run: Callable[..., None],
    *run_args: Any,
    keep: list[socket.socket],
    close: tuple[int, ...] = (),
) -> int:
    """Fork a child pinned to `cpu` that runs `run` and exits; it closes every socket of
    `_ALL` it does not `keep` (so EOF reaches each reader when its sender closes) and the
    pipe ends in `close` (so A sees EOF if B dies before subscribing)."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.sched_setaffinity(0, {cpu})
        for sock in _ALL:
            if sock not in keep:
                sock.close()
        for fd in close:
            os.close(fd)
        run(keep, *run_args)
        code = 0
    finally:
        os._exit(code)


_ALL: list[socket.socket] = []


def _socket_pairs(count: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """`count` connected loopback TCP pairs: (sending ends with TCP_NODELAY, reading ends)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(count)
        address = listener.getsockname()
        senders, readers = [], []
        for _ in range(count):
            readers.append(socket.create_connection(address))
            sock, _ = listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as hibiki's sockets
            senders.append(sock)
    return senders, readers


def run_variant(
    args: argparse.Namespace, redis: RedisProcess, order: str, layout: str, tmp: Path
) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    cpu_a, other = cpus[0], cpus[-1]
    cpu_b = cpu_a if layout == "one" else other
    os.sched_setaffinity(redis.pid, {cpu_a})
    a_send, a_read = _socket_pairs(args.receivers)
    b_send, b_read = _socket_pairs(args.receivers)
    _ALL[:] = [*a_send, *a_read, *b_send, *b_read]
    names = ("same", "cross", "hop", "sweep")
    files = {name: tmp / f"{order}-{layout}-{name}.bin" for name in names}
    ready_r, ready_w = os.pipe()
    read_a_cpu, read_b_cpu = (other, other) if layout == "one" else (cpu_b, cpu_a)
    pids = [
        _fork(read_a_cpu, _reader, args, files["same"], read_a_cpu, keep=a_read),
        _fork(read_b_cpu, _reader, args, files["cross"], read_b_cpu, keep=b_read),
        _fork(
            cpu_b,
            _subscriber,
            args,
            redis.port,
            ready_w,
            files["hop"],
            keep=b_send,
            close=(ready_r,),
        ),
        _fork(
            cpu_a,
            _publisher,
            args,
            redis.port,
            order,
            ready_r,
            files["sweep"],
            keep=a_send,
            close=(ready_w,),
        ),
    ]
    for sock in _ALL:
        sock.close()
    os.close(ready_r)
    os.close(ready_w)
    failed = [pid for pid in pids if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
    if failed:
        raise SystemExit(f"hop: {len(failed)} of the benchmark's processes failed")
    figures = {name: _load_ms(path) for name, path in files.items()}
    return _summary(args, order, layout, cpu_a, cpu_b, figures)


def _load_ms(path: Path) -> list[float]:
    values = array("d")
    values.frombytes(path.read_bytes())
    return [v / 1000 for v in values]


def _summary(
    args: argparse.Namespace,
    order: str,
    layout: str,
    cpu_a: int,
    cpu_b: int,
    figures: dict[str, list[float]],
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "order": order,
        "layout": layout,
        "cpu_a": cpu_a,
        "cpu_b": cpu_b,
        "received_same": len(figures["same"]),
        "received_cross": len(figures["cross"]),
        "expected_per_side": (args.messages - args.warmup) * args.receivers,
    }
    for name, values in figures.items():
        result[f"{name}_ms_p50"] = statistics.median(values)
        result[f"{name}_ms_p99"] = percentile(values, 0.99)
    result["diff_ms_p50"] = result["cross_ms_p50"] - result["same_ms_p50"]
    result["diff_ms_p99"] = result["cross_ms_p99"] - result["same_ms_p99"]
    return result


def report(results: dict[str, Any]) -> str:
    lines = [
        f"Cross-process floor: {results['receivers']} sockets per process, {results['messages']}"
        f" messages {results['gap_ms']:g} ms apart ({results['warmup']} not counted),"
        f" {results['frame_bytes']}-byte frames, no hibiki code timed:",
        "",
        "| layout | publish | same p50 | same p99 | cross p50 | cross p99 | cross - same p50"
        " | cross - same p99 | publish → B p50 / p99 | A's sweep p50 / p99 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in results["variants"]:
        where = "A, B, Redis on one CPU" if v["layout"] == "one" else "A+Redis / B split"
        lines.append(
            f"| {where} | {v['order']} sends | {v['same_ms_p50']:.2f} | {v['same_ms_p99']:.2f}"
            f" | {v['cross_ms_p50']:.2f} | {v['cross_ms_p99']:.2f} | {v['diff_ms_p50']:.2f}"
            f" | {v['diff_ms_p99']:.2f} | {v['hop_ms_p50']:.2f} / {v['hop_ms_p99']:.2f}"
            f" | {v['sweep_ms_p50']:.2f} / {v['sweep_ms_p99']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.messages <= args.warmup:
        raise SystemExit("--messages must exceed --warmup")
    raise_fd_limit(8 * args.receivers + 256)
    results: dict[str, Any] = {
        "receivers": args.receivers,
        "messages": args.messages,
        "warmup": args.warmup,
        "gap_ms": args.gap_ms,
        "frame_bytes": args.frame_bytes,
        "variants": [],
    }
    with tempfile.TemporaryDirectory(prefix="hibiki-hop-") as tmp:
        redis = start_redis(Path(tmp) / "redis")
        try:
            for layout in args.layouts:
                for order in args.orders:
                    variant = run_variant(args, redis, order, layout, Path(tmp))
                    results["variants"].append(variant)
        finally:
            redis.stop()
    print(report(results))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

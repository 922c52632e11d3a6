"""Instructions per delivery on the fan-out hot path, counted by valgrind (callgrind), so a
change to the bus, `RoomHub.publish` or the flusher can be judged on this shared, noisy machine,
where CPU-time figures move by more than such a change.

One message at a time (the low-rate case: nothing to batch) is published to N connections over
Unix socketpairs and flushed, the way the writer does it: its encoded event with its seq into the
real `LocalBus`, then `RoomHub` (seq order, framing) and `Flusher`; beside it, a bare loop of
`sock.send` over the same sockets. Each runs twice under callgrind with M1 and M2 messages, and
the difference divided by N x (M2 - M1) is the user-space instructions per delivery, start-up
excluded. Kernel work is not counted (callgrind does not see it): this measures hibiki's own
Python, which `hibiki - bare` isolates.

    python scripts/bench_fanout_instructions.py            # about a minute

`--light` measures light load through a real server instead (scripts/_lightload.py): one
message at a time to `--receivers` (10) TCP connections of a `hibiki serve` process, counting
the instructions per MESSAGE of that whole process (event loop, SQLite writer thread; user
space) under callgrind, and its CPU per message (user + system, every thread) in a plain run:

    python scripts/bench_fanout_instructions.py --light --receivers 10   # a few minutes
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", type=int, help="default 1000, with --light 10")
    parser.add_argument("--light", action="store_true", help="through a real server (above)")
    parser.add_argument(
        "--light-messages", type=int, default=200, help="--light: under callgrind (0: none)"
    )
    parser.add_argument("--cpu-messages", type=int, default=3000, help="--light: CPU run (0: none)")
    parser.add_argument("--light-dump", type=Path, help="--light: keep the callgrind dump here")
    parser.add_argument("--m1", type=int, default=10, help="messages in the shorter run")
    parser.add_argument("--m2", type=int, default=40, help="messages in the longer run")
    parser.add_argument("--run", choices=["hibiki", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def _socketpairs(count: int) -> tuple[list[socket.socket], list[socket.socket]]:
    ours, theirs = [], []
    for _ in range(count):
        a, b = socket.socketpair()
        a.setblocking(False)
        ours.append(a)
        theirs.append(b)  # kept open, never read: the frames fit in the socket buffers
    return ours, theirs


def run_hibiki(receivers: int, messages: int) -> None:
    import trio

    from protocol import Message, encode
    from server.chat.connection import ChatConnection
    from server.fanout.bus import LocalBus
    from server.fanout.hub import RoomHub
    from server.transport.connection import WsConnection
    from server.transport.flusher import Flusher
    from server.transport.frames import text_frame

    async def main() -> None:
        flusher = Flusher()
        bus = LocalBus()
        hub = RoomHub(flusher, bus=bus)
        bus.attach_hub(hub)
        ours, _theirs = _socketpairs(receivers)
        for n, sock in enumerate(ours):
            conn = ChatConnection(WsConnection(sock, f"peer{n}", flusher, 1 << 30).out)
            conn.user_id, conn.user_name = n + 1, f"user{n}"
            hub.subscribe("room", conn)
        flusher.dirty.clear()  # what the presence announcements queued: not measured
        for buf in hub._subs["room"].values():
            buf.items.clear()
            buf.dirty = False
        payloads = [
            encode(Message("room", k, k, "user0", "x" * 60, 0, "c" * 32))
            for k in range(1, messages + 1)
        ]
        for seq, payload in enumerate(payloads, 1):  # one per flush cycle, as Flusher.run would
            bus.publish_message("room", seq, payload)
            dirty, flusher.dirty = flusher.dirty, []
            flusher._flush_all(dirty)
        assert flusher.bytes_sent == receivers * sum(len(text_frame(p)) for p in payloads)

    trio.run(main)


def run_bare(receivers: int, messages: int) -> None:
    ours, _theirs = _socketpairs(receivers)
    frame = b"x" * 140
    for _ in range(messages):
        for sock in ours:
            sock.send(frame)


def callgrind_instructions(script: str, args: list[str], what: str) -> int:
    """The instructions callgrind counts for `python script *args`, the whole process (also
    used by bench_inbound_instructions.py)."""
    with tempfile.TemporaryDirectory(prefix="hibiki-cg-") as tmp:
        out = Path(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        cmd += [sys.executable, script, *args]
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{what} under callgrind failed:\n{done.stderr[-2000:]}")
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if found is None:
            raise SystemExit(f"no instruction count in callgrind's output:\n{done.stderr[-2000:]}")
        return int(found.group(1).replace(",", ""))


def instructions(kind: str, receivers: int, messages: int) -> int:
    args = ["--run", kind, "--receivers", str(receivers), "--messages", str(messages)]
    return callgrind_instructions(__file__, args, kind)


def light(args: argparse.Namespace) -> None:
    from _lightload import measure

    receivers = args.receivers or 10
    if args.cpu_messages > 0:
        warmup = min(300, args.cpu_messages)
        cpu = measure(receivers, warmup, args.cpu_messages, callgrind=False)
        print(f"light, N={receivers}: {cpu * 1e3:.3f} ms server CPU per message (no valgrind)")
    if args.light_messages <= 0:
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    dump = args.light_dump
    count = measure(receivers, 30, args.light_messages, callgrind=True, keep_dump=dump)
    print(f"light, N={receivers}: {count:,.0f} instructions per message (whole server process)")


def main() -> None:
    args = parse_args()
    if args.run == "hibiki":
        run_hibiki(args.receivers, args.messages)
        return
    if args.run == "bare":
        run_bare(args.receivers, args.messages)
        return
    if args.light:
        light(args)
        return
    if args.receivers is None:
        args.receivers = 1000
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    if args.m2 <= args.m1:
        raise SystemExit("--m2 must be larger than --m1")
    deliveries = args.receivers * (args.m2 - args.m1)
    per: dict[str, float] = {}
    for kind in ("hibiki", "bare"):
        short = instructions(kind, args.receivers, args.m1)
        long = instructions(kind, args.receivers, args.m2)
        per[kind] = (long - short) / deliveries
        print(f"{kind:>6}: {per[kind]:,.0f} instructions per delivery")
    print(f"hibiki - bare: {per['hibiki'] - per['bare']:,.0f} instructions per delivery of its own")


if __name__ == "__main__":
    main()

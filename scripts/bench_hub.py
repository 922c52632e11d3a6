"""Fan-out hot path alone: RoomHub.publish + Flusher over real loopback TCP sockets.

Measures the server process's CPU per delivery for the encode-once / frame-once / one-flusher
design, with a forked child draining the client ends (it is not counted). Compare with
`--mode per-connection-writer` (a writer task per connection) in the same run.

    python scripts/bench_hub.py --receivers 1000 --messages 2000 --batch 50
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio.lowlevel

from protocol import Message, encode
from server.chat.connection import ChatConnection, ConnState
from server.fanout.hub import RoomHub
from server.transport.connection import WsConnection
from server.transport.flusher import Flusher
from server.transport.frames import text_frame


def connect_pairs(n: int) -> tuple[list[socket.socket], list[socket.socket]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(n)
    clients, servers = [], []
    for _ in range(n):
        c = socket.create_connection(listener.getsockname())
        s, _ = listener.accept()
        s.setblocking(False)
        clients.append(c)
        servers.append(s)
    listener.close()
    return clients, servers


def drain(clients: list[socket.socket], expected: int) -> None:
    sel = selectors.EpollSelector()
    for c in clients:
        c.setblocking(False)
        sel.register(c, selectors.EVENT_READ)
    total = 0
    while total < expected:
        for key, _ in sel.select(timeout=10):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                while True:
                    data = sock.recv(1 << 20)
                    if not data:
                        break
                    total += len(data)
            except BlockingIOError:
                pass
    os._exit(0)


async def run_flusher(servers: list[socket.socket], frames: list[bytes], batch: int) -> float:
    flusher = Flusher()
    hub = RoomHub(flusher)
    conns = []
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        for i, s in enumerate(servers):
            conn = ChatConnection(WsConnection(s, f"peer{i}", flusher, 1 << 30).out)
            conn.user_name = f"u{i}"
            conn.state = ConnState.OPEN
            hub.subscribe("room", conn)
            conns.append(conn)
        await trio.sleep(0.2)  # let presence frames flush
        start = time.process_time()
        for i in range(0, len(frames), batch):
            for j, frame in enumerate(frames[i : i + batch]):
                hub.publish("room", frame, i + j + 1)
            await trio.lowlevel.checkpoint()  # the flusher runs after this batch of work
        # Wait for slow readers (the clock includes this tail); polling keeps the server free
        # of benchmark-only events.
        while flusher.blocked_writers or any(c.out.items for c in conns):  # noqa: ASYNC110
            await trio.sleep(0.001)
        elapsed = time.process_time() - start
        nursery.cancel_scope.cancel()
    return elapsed


async def run_per_writer(servers: list[socket.socket], frames: list[bytes], batch: int) -> float:
    """The rejected variant: each connection has a writer task woken per batch."""
    tsocks = [trio.socket.from_stdlib_socket(s) for s in servers]
    queues: list[list[bytes]] = [[] for _ in servers]
    events = [trio.Event() for _ in servers]

    async def writer(i: int) -> None:
        while True:
            await events[i].wait()
            events[i] = trio.Event()
            data = b"".join(queues[i])
            queues[i].clear()
            view = memoryview(data)
            while view:
                sent = await tsocks[i].send(view)
                view = view[sent:]

    async with trio.open_nursery() as nursery:
        for i in range(len(servers)):
            nursery.start_soon(writer, i)
        await trio.sleep(0.2)
        start = time.process_time()
        for i in range(0, len(frames), batch):
            for frame in frames[i : i + batch]:
                for k, q in enumerate(queues):
                    q.append(frame)
                    events[k].set()
            await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()
        while any(queues):  # noqa: ASYNC110
            await trio.sleep(0.001)
        elapsed = time.process_time() - start
        nursery.cancel_scope.cancel()
    return elapsed


def measure(mode: str, receivers: int, messages: int, batch: int) -> float:
    clients, servers = connect_pairs(receivers)
    frames = [
        text_frame(
            encode(Message(room="room", id=i, seq=i, user="bench", text=f"message {i:08d}", ts=0))
        )
        for i in range(messages)
    ]
    expected = sum(len(f) for f in frames) * receivers
    pid = os.fork()
    if pid == 0:
        for s in servers:
            s.close()
        drain(clients, expected)
    for c in clients:
        c.close()
    runner = run_flusher if mode == "flusher" else run_per_writer
    cpu = trio.run(runner, servers, frames, batch)
    os.waitpid(pid, 0)
    for s in servers:
        s.close()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--receivers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50, help="messages published per trio tick")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    deliveries = args.receivers * args.messages
    results: dict[str, list[float]] = {"flusher": [], "per-connection-writer": []}
    for _ in range(args.rounds):
        for mode in results:
            cpu = measure(mode, args.receivers, args.messages, args.batch)
            results[mode].append(cpu / deliveries * 1e6)
    for mode, values in results.items():
        best = sorted(values)[len(values) // 2]
        print(
            f"{mode:>22}: {best:.3f} µs server CPU per delivery (median of {len(values)}), "
            f"{1 / best:.2f}M deliveries/s per core"
        )
    ratio = (
        sorted(results["per-connection-writer"])[args.rounds // 2]
        / sorted(results["flusher"])[args.rounds // 2]
    )
    print(f"flusher is {ratio:.1f}x cheaper per delivery than a writer task per connection")


if __name__ == "__main__":
    main()

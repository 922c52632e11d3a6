"""One large message (4-16 MiB) to one reader over loopback TCP: hibiki's flusher against the
`websockets` library, as wall time and sending-process CPU per message.

A large frame never fits the kernel's send buffer, so it always goes the slow path: a partial
send, then a writer task that sends the rest as the peer makes room. The reader is a child
process (not counted) that reads as fast as it can and answers one byte per whole message; the
sender times from queueing the message to that answer. Both peers send a text frame of the same
bytes, uncompressed, and build the frame inside the timed part.

    python scripts/bench_large_frames.py                    # 4, 8 and 16 MiB, both peers
    python scripts/bench_large_frames.py --sizes 16 --repeats 9 --peers hibiki
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MiB = 1 << 20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4,8,16", help="message sizes in MiB (at least 1)")
    parser.add_argument("--repeats", type=int, default=7, help="messages per size (median kept)")
    parser.add_argument("--peers", default="hibiki,websockets", help="which senders to measure")
    parser.add_argument("--reader", nargs=4, metavar=("PORT", "SIZE", "COUNT", "HANDSHAKE"))
    return parser.parse_args()


def _header(size: int) -> bytes:
    """The header of an unmasked final text frame of `size` bytes (at least 64 KiB)."""
    return bytes((0x81, 127)) + size.to_bytes(8, "big")


def run_reader(port: int, size: int, count: int, handshake: bool) -> None:
    """Read `count` text frames of a `size`-byte payload, checking each header, answering each
    once it is whole; exits non-zero on anything else."""
    sock = socket.create_connection(("127.0.0.1", port))
    if handshake:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)  # byte by byte: nothing after the head is consumed here
    buffer = bytearray(4 * MiB)
    view = memoryview(buffer)
    answer = bytes([0x81, 0x81]) + b"\0\0\0\0" + b"k" if handshake else b"k"  # masked "k"
    header = _header(size)
    for _ in range(count):
        _read_exactly(sock, view, len(header))
        if bytes(view[: len(header)]) != header:
            raise SystemExit(f"reader: not the frame header expected: {bytes(view[:10])!r}")
        _read_exactly(sock, view, size)
        sock.sendall(answer)
    sock.close()


def _read_exactly(sock: socket.socket, view: memoryview, size: int) -> None:
    while size:
        got = sock.recv_into(view[: min(size, len(view))])
        if not got:
            raise SystemExit("reader: the sender closed early")
        size -= got


def _spawn_reader(port: int, size: int, count: int, handshake: bool) -> subprocess.Popen[bytes]:
    argv = [sys.executable, __file__, "--reader", str(port), str(size), str(count)]
    return subprocess.Popen([*argv, "1" if handshake else "0"])


def bench_hibiki(size: int, repeats: int) -> list[tuple[float, float]]:
    import trio

    from server.chat.connection import ChatConnection, ConnState
    from server.transport.connection import WsConnection
    from server.transport.flusher import Flusher
    from server.transport.frames import text_frame

    payload = b"x" * size
    results: list[tuple[float, float]] = []

    async def main() -> None:
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        reader = _spawn_reader(listener.getsockname()[1], size, repeats, False)
        accepted, _ = await listener.accept()
        listener.close()
        sock = accepted.detach()
        raw = socket.socket(fileno=sock)
        raw.setblocking(False)
        flusher = Flusher()
        async with trio.open_nursery() as nursery:
            await nursery.start(flusher.run)
            conn = ChatConnection(WsConnection(raw, "bench", flusher, 1 << 40).out)
            conn.set_state(ConnState.OPEN)
            for _ in range(repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                conn.enqueue(text_frame(payload))
                await trio.lowlevel.wait_readable(raw)
                assert raw.recv(1) == b"k"
                results.append((time.perf_counter() - wall, time.process_time() - cpu))
            nursery.cancel_scope.cancel()
        raw.close()
        if reader.wait():
            raise SystemExit("hibiki: the reader failed")

    trio.run(main)
    return results


def bench_websockets(size: int, repeats: int) -> list[tuple[float, float]]:
    from websockets.asyncio.server import ServerConnection, serve

    payload = b"x" * size
    results: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            await ws.send(payload, text=True)
            assert await ws.recv() == "k"
            results.append((time.perf_counter() - wall, time.process_time() - cpu))
        done.set()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            reader = _spawn_reader(port, size, repeats, True)
            await done.wait()
            if await asyncio.to_thread(reader.wait):
                raise SystemExit("websockets: the reader failed")

    asyncio.run(main())
    return results


def main() -> None:
    args = parse_args()
    if args.reader:
        port, size, count, handshake = args.reader
        run_reader(int(port), int(size), int(count), handshake == "1")
        return
    benches = {"hibiki": bench_hibiki, "websockets": bench_websockets}
    peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(peers) - set(benches))
    if unknown:
        raise SystemExit(f"unknown peer(s): {', '.join(unknown)}")
    print(f"{'size':>7} {'peer':>10} {'wall ms':>9} {'cpu ms':>8}   (median of {args.repeats})")
    for mib in (int(s) for s in args.sizes.split(",")):
        for peer in peers:
            runs = benches[peer](mib * MiB, args.repeats)
            wall = statistics.median(w for w, _ in runs) * 1000
            cpu = statistics.median(c for _, c in runs) * 1000
            print(f"{mib:>4} MiB {peer:>10} {wall:>9.1f} {cpu:>8.1f}", flush=True)


if __name__ == "__main__":
    main()

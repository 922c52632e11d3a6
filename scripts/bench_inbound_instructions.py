"""Instructions per inbound message on the WebSocket read path, counted by valgrind (callgrind),
with wsproto alone and with the fast path for whole text frames (issue #14), in one invocation.

A client writes masked text frames (a `send` request of ~100 bytes each) into a Unix socketpair;
the server's own read step, `_receive` then `_handle_events` of server/chat/websocket.py, reads
them, parses them and decodes each request (`protocol.decode`), which a session stub accepts and
drops: what is counted is framing and decoding, not the chat rules. Frames arrive one per `recv`
(light load) or `--batch` per `recv` (a flood). Each case runs twice under callgrind with M1 and
M2 messages; (long - short) / (M2 - M1) is the user-space instructions per message, start-up
excluded.

    python scripts/bench_inbound_instructions.py            # several minutes under callgrind
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fanout_instructions import callgrind_instructions

KINDS = ("wsproto", "fast")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=50, help="frames per recv in the flood case")
    parser.add_argument("--m1", type=int, default=100, help="messages in the shorter run")
    parser.add_argument("--m2", type=int, default=600, help="messages in the longer run")
    parser.add_argument("--run", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--per-recv", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    header = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + body


class _Session:
    """Accepts every request and keeps none: the chat rules are not what is measured."""

    protocol_errors = 0
    unyielded = 0  # the read step counts admitted requests here

    def __init__(self) -> None:
        self.handled = 0

    async def handle(self, request: object) -> None:
        self.handled += 1

    def refuse(self, exc: Exception, ref: str | None = None) -> None:
        raise AssertionError(f"a benchmark frame was refused: {exc}")


def run(kind: str, per_recv: int, messages: int) -> None:
    import trio
    from wsproto import ConnectionType
    from wsproto.connection import Connection

    from server.chat import websocket
    from server.chat.connection import ChatConnection
    from server.config import Config
    from server.transport.connection import WsConnection
    from server.transport.flusher import Flusher
    from server.transport.inbound import InboundConnection

    config = Config.from_flat()
    request = {"type": "send", "room": "lobby", "text": "x" * 40, "client_id": "c" * 32}
    frame = masked_text_frame(json.dumps(request).encode())

    async def main() -> None:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        conn = ChatConnection(WsConnection(ours, "peer", Flusher(), 1 << 30).out)
        ws: Any = (
            InboundConnection(config.limits.max_frame)
            if kind == "fast"
            else Connection(ConnectionType.SERVER)
        )
        session: Any = _Session()
        message = websocket._Message()
        for _ in range(messages // per_recv):
            theirs.sendall(frame * per_recv)
            assert websocket._receive(conn, ours, ws)
            assert await websocket._handle_events(conn, ws, session, config, message)
        assert session.handled == messages // per_recv * per_recv

    trio.run(main)


def instructions(kind: str, per_recv: int, messages: int) -> int:
    args = ["--run", kind, "--per-recv", str(per_recv), "--messages", str(messages)]
    return callgrind_instructions(__file__, args, kind)


def main() -> None:
    args = parse_args()
    if args.run is not None:
        run(args.run, args.per_recv, args.messages)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    if args.m2 <= args.m1:
        raise SystemExit("--m2 must be larger than --m1")
    for per_recv in (1, args.batch):
        m1, m2 = (args.m1 // per_recv * per_recv, args.m2 // per_recv * per_recv)
        per: dict[str, float] = {}
        for kind in KINDS:
            short = instructions(kind, per_recv, m1)
            long = instructions(kind, per_recv, m2)
            per[kind] = (long - short) / (m2 - m1)
            print(f"{per_recv:>3} per recv, {kind:>7}: {per[kind]:,.0f} instructions per message")
        print(f"{per_recv:>3} per recv, wsproto / fast: {per['wsproto'] / per['fast']:.2f}x")


if __name__ == "__main__":
    main()

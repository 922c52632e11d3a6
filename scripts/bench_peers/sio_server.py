"""Peer for the fan-out benchmark: python-socketio (ASGI) on uvicorn doing the same room
fan-out. Nothing is stored or authenticated. With `--redis URL` every emit also goes through
python-socketio's `AsyncRedisManager`, so several processes started with the same URL serve one
room (a room's members may be connected to any of them).

Protocol (Socket.IO v5 over Engine.IO v4, WebSocket transport; the `socketio` dialect of
scripts/loadgen_node/protocols.js): event `join` (room name, acknowledged), event
`send` {room, text} => event `message` {type, room, id, seq, user, text, ts} to every member.

    python scripts/bench_peers/sio_server.py --port 8766
    python scripts/bench_peers/sio_server.py --port 8767 --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import socket
import time
from collections import defaultdict
from typing import Any

import socketio
import uvicorn


def make_server(redis_url: str | None) -> socketio.AsyncServer:
    """The Socket.IO server and its two events; shared across processes via Redis given a URL."""
    manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*", client_manager=manager)
    seqs: defaultdict[str, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
    ids = itertools.count(1)

    async def join(sid: str, room: str) -> str:
        await sio.enter_room(sid, room)
        return "ok"

    async def send(sid: str, data: dict[str, Any]) -> None:
        room = data["room"]
        if room not in sio.rooms(sid):
            return
        event = {
            "type": "message",
            "room": room,
            "id": next(ids),
            "seq": next(seqs[room]),
            "user": "peer",
            "text": data.get("text", ""),
            "ts": int(time.time() * 1000),
        }
        await sio.emit("message", event, room=room)

    sio.on("join", join)
    sio.on("send", send)
    return sio


def main(host: str, port: int, ws: str, redis_url: str | None) -> None:
    # Bind first so an ephemeral port can be announced before uvicorn starts serving on it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)  # before announcing: a client may connect as soon as it reads the line
    bound = sock.getsockname()
    app = socketio.ASGIApp(make_server(redis_url))
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", access_log=False, backlog=4096, ws=ws
    )
    server = uvicorn.Server(config)
    via = f" (redis manager: {redis_url})" if redis_url else ""
    print(f"python-socketio on uvicorn listening on {bound[0]}:{bound[1]}{via}", flush=True)
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument(
        "--ws",
        default="websockets-sansio",
        choices=["websockets-sansio", "websockets", "wsproto"],
        help="uvicorn WebSocket implementation (sansio and wsproto measured alike, legacy slower)",
    )
    parser.add_argument("--redis", metavar="URL", help="share rooms with other processes via Redis")
    args = parser.parse_args()
    main(args.host, args.port, args.ws, args.redis)

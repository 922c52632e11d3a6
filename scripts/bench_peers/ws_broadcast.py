"""Peer for the fan-out benchmark: a minimal room broadcast server on the `websockets` library
(asyncio implementation, its `broadcast()` helper). Nothing is stored or authenticated.

Protocol (the `websockets` dialect of scripts/loadgen_node/protocols.js):
    -> {"type":"join","room":R}            <- {"type":"joined","room":R}
    -> {"type":"send","room":R,"text":T}   => every connection in R gets
       {"type":"message","room":R,"id":..,"seq":..,"user":..,"text":T,"ts":..}

    python scripts/bench_peers/ws_broadcast.py --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import defaultdict

from websockets.asyncio.server import ServerConnection, broadcast, serve

rooms: defaultdict[str, set[ServerConnection]] = defaultdict(set)
seqs: defaultdict[str, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
ids = itertools.count(1)
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


async def handler(ws: ServerConnection) -> None:
    joined: list[str] = []
    try:
        async for raw in ws:
            request = json.loads(raw)
            kind, room = request.get("type"), request.get("room")
            if not isinstance(room, str):
                continue
            if kind == "join":
                rooms[room].add(ws)
                joined.append(room)
                await ws.send(_dumps({"type": "joined", "room": room}))
            elif kind == "send" and room in joined:
                event = {
                    "type": "message",
                    "room": room,
                    "id": next(ids),
                    "seq": next(seqs[room]),
                    "user": "peer",
                    "text": request.get("text", ""),
                    "ts": int(time.time() * 1000),
                }
                broadcast(rooms[room], _dumps(event))  # encoded once, queued to every member
    finally:
        for room in joined:
            rooms[room].discard(ws)


async def main(host: str, port: int) -> None:
    async with serve(handler, host, port, compression=None, max_queue=None) as server:
        bound = server.sockets[0].getsockname()
        print(f"websockets broadcast listening on {bound[0]}:{bound[1]}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))

"""An idle WebSocket holds only its state: nothing of its handshake (the parsed upgrade request)
or of its last message stays referenced once they are handled (issue #11: <= 12 KiB per idle
connection; scripts/bench_idle_workers.py measures the whole)."""

from __future__ import annotations

import gc
import json

import h11
import httpx
from wsproto.events import TextMessage

from ..conftest import RunningServer, create_room, register
from ..rawws import RawWs


def _alive(kind: type) -> list[object]:
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, kind)]


async def _events(raw: RawWs, count: int) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    while len(events) < count:
        frame = await raw.read_frame()
        assert frame is not None, events
        events.append(json.loads(frame[1]))
    return events


async def test_an_idle_joined_connection_keeps_no_upgrade_request_or_last_request(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice = await register(http)
    await create_room(http, alice, "idle")
    async with RawWs.open(server.port) as raw:
        assert b" 101 " in await raw.read_response_head()
        await raw.send_frame(json.dumps({"type": "hello", "token": alice.token}).encode())
        await raw.send_frame(json.dumps({"type": "join", "room": "idle"}).encode())
        events = await _events(raw, 2)
        assert [e["type"] for e in events[:2]] == ["welcome", "joined"], events
        upgrades = [r for r in _alive(h11.Request) if getattr(r, "target", b"") == b"/ws"]
        assert upgrades == []  # the listener, the entry and the handler all let it go
        last = [e for e in _alive(TextMessage) if '"idle"' in e.data]
        assert last == []  # nor the frame of its last request
        # Still live: a ping is answered with a pong.
        await raw.send_frame(b"still there", opcode=0x9)
        frame = await raw.read_frame()
        assert frame == (0xA, b"still there")

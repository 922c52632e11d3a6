"""End to end, the outbound path under pressure: a reader too slow for its room is cut off with
whole frames and the 4008 close."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio

from protocol import CloseCode

from .conftest import STEP, Account, create_room, join_room, make_config, register, running_server
from .rawws import RawWs, parse_frames


async def _import(http: httpx.AsyncClient, user: Account, room: str, texts: list[str]) -> None:
    auth = {"Authorization": f"Bearer {user.token}"}
    body = {"messages": [{"text": text} for text in texts]}
    response = await http.post(f"/api/rooms/{room}/messages:batch", json=body, headers=auth)
    assert response.status_code == 201, response.text


async def _hello(port: int, user: Account, rcvbuf: int, **fields: Any) -> RawWs:
    raw = await RawWs.connect(port, rcvbuf=rcvbuf)
    assert b" 101 " in await raw.read_response_head()
    await raw.send_frame(json.dumps({"type": "hello", "token": user.token, **fields}).encode())
    return raw


async def _receive(raw: RawWs, into: bytearray, size: int | None) -> None:
    """Append `size` more bytes of the stream to `into` (fewer at EOF; None: all, to EOF)."""
    goal = None if size is None else len(into) + size
    while goal is None or len(into) < goal:
        received = await raw.stream.receive_some(65536)
        if not received:
            return
        into += received


async def _closed_for(http: httpx.AsyncClient, reason: str) -> int:
    text = (await http.get("/metrics")).text
    line = f'hibiki_connections_closed_total{{reason="{reason}"}} '
    return sum(int(float(ln.split()[-1])) for ln in text.splitlines() if ln.startswith(line))


async def test_slow_reader_cut_off_receives_whole_frames_then_4008(tmp_path: Path) -> None:
    # In lockstep: each imported batch (~790 kB) is followed by reading ~400 kB, so the reader
    # keeps its writer making partial sends (each one cut inside a frame) while its backlog
    # grows past the bound; what was on the wire is finished, the rest dropped, then 4008.
    config = make_config(
        tmp_path, outbound_limit=8 * 1024 * 1024, rate_per_second=0, close_timeout=STEP
    )
    async with running_server(config) as server, httpx.AsyncClient(base_url=server.http) as http:
        alice, slow_user = await register(http), await register(http)
        await create_room(http, alice, "flood")
        await join_room(http, slow_user, "flood")
        raw = await _hello(server.port, slow_user, rcvbuf=16384)
        data = bytearray(raw.buf)
        with trio.fail_after(STEP * 3):
            for _ in range(60):  # ~47 MB at most; the cut comes after ~13 MB
                await _import(http, alice, "flood", ["x" * 3900] * 200)
                if await _closed_for(http, "slow_consumer"):
                    break
                await _receive(raw, data, 400_000)
            else:
                raise AssertionError("never cut off as a slow consumer")
            await _receive(raw, data, None)
        await raw.aclose()
    frames = parse_frames(bytes(data))
    opcode, payload = frames[-1]
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == CloseCode.SLOW_CONSUMER
    events = [json.loads(payload) for opcode, payload in frames if opcode == 0x1]
    seqs = [event["seq"] for event in events if event["type"] == "message"]
    assert seqs == list(range(1, len(seqs) + 1))  # a prefix of the room, nothing skipped

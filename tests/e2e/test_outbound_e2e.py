"""End to end, the outbound path under pressure: a reader too slow for its room is cut off with
whole frames and the 4008 close; a resume replay goes at the pace of a reader that keeps reading,
and still cuts off one that does not."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from protocol import CloseCode

from ..conftest import STEP, Account, create_room, join_room, make_config, register, running_server
from ..rawws import RawWs, parse_frames


async def _import(http: httpx.AsyncClient, user: Account, room: str, texts: list[str]) -> None:
    auth = {"Authorization": f"Bearer {user.token}"}
    body = {"messages": [{"text": text} for text in texts]}
    response = await http.post(f"/api/rooms/{room}/messages:batch", json=body, headers=auth)
    assert response.status_code == 201, response.text


@asynccontextmanager
async def _hello(port: int, user: Account, rcvbuf: int, **fields: Any) -> AsyncIterator[RawWs]:
    raw = await RawWs.connect(port, rcvbuf=rcvbuf)
    try:
        assert b" 101 " in await raw.read_response_head()
        await raw.send_frame(json.dumps({"type": "hello", "token": user.token, **fields}).encode())
        yield raw
    finally:
        await raw.aclose()


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
        async with _hello(server.port, slow_user, rcvbuf=16384) as raw:
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
    frames = parse_frames(bytes(data))
    opcode, payload = frames[-1]
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == CloseCode.SLOW_CONSUMER
    events = [json.loads(payload) for opcode, payload in frames if opcode == 0x1]
    seqs = [event["seq"] for event in events if event["type"] == "message"]
    assert seqs == list(range(1, len(seqs) + 1))  # a prefix of the room, nothing skipped


CJK = "漢字かな交じり文" * 500  # 4,000 characters (max_text), 12,000 bytes of UTF-8


def _text(n: int) -> str:
    return f"{n:04d}{CJK[4:]}"


async def _room_with_missed(http: httpx.AsyncClient, count: int) -> tuple[Account, Account]:
    alice, bob = await register(http), await register(http)
    await create_room(http, alice, "r")
    await join_room(http, bob, "r")
    for start in range(0, count, 50):
        await _import(http, alice, "r", [_text(n) for n in range(start, start + 50)])
    return alice, bob


async def test_resume_replay_goes_at_the_pace_of_a_steady_reader(tmp_path: Path) -> None:
    # 7.2 MB of missed messages: more than the kernel buffers (4 MiB) and the backlog bound
    # (outbound_limit 1 MiB). The replay outlasts the heartbeat deadline, and the client's
    # Pongs wait unread behind it: a client that keeps reading is not stale either.
    # The deadline is well under the replay's length (at least 1.8 s at 4 MB/s) and several
    # times one 512 KiB part's, so a loaded machine does not make the reader look stale.
    config = make_config(
        tmp_path, rate_per_second=0, heartbeat_interval=0.3, heartbeat_deadline=1.0
    )
    async with running_server(config) as server, httpx.AsyncClient(base_url=server.http) as http:
        alice, bob = await _room_with_missed(http, 600)
        async with _hello(server.port, bob, rcvbuf=8192, resume={"r": 0}) as raw:
            texts: list[str] = []
            seqs: list[int] = []
            with trio.fail_after(STEP * 2):
                while len(seqs) < 601:
                    frame = await raw.read_frame()
                    assert frame is not None, "the server closed the stream"
                    opcode, payload = frame
                    assert opcode != 0x8, f"closed with {int.from_bytes(payload[:2], 'big')}"
                    if opcode == 0x9:
                        await raw.send_frame(payload, opcode=0xA)
                        continue
                    event = json.loads(payload)
                    if event["type"] == "message":
                        texts.append(event["text"])
                        seqs.append(event["seq"])
                        if len(seqs) == 100:  # mid-replay: held, then delivered after it
                            await _import(http, alice, "r", ["live"])
                    # Pacing, not synchronisation: 4 MB/s at most, slower than the replay.
                    await trio.sleep(0.003)
            assert seqs == list(range(1, 602))
            assert texts == [_text(n) for n in range(600)] + ["live"]


async def test_resume_replay_to_a_client_that_does_not_read_ends_in_4008(tmp_path: Path) -> None:
    config = make_config(tmp_path, rate_per_second=0, close_timeout=STEP, resume_stall_timeout=0.5)
    async with running_server(config) as server, httpx.AsyncClient(base_url=server.http) as http:
        _, bob = await _room_with_missed(http, 600)
        async with _hello(server.port, bob, rcvbuf=4096, resume={"r": 0}) as raw:
            with trio.fail_after(STEP):
                # The server's decision shows only in its metrics: polled, no event to await.
                while not await _closed_for(http, "slow_consumer"):  # noqa: ASYNC110
                    await trio.sleep(0.05)
                assert await raw.read_until_close() == CloseCode.SLOW_CONSUMER

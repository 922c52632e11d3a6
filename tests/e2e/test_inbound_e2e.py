"""WebSocket conformance of the read path with the inbound fast path (issue #14), over real
sockets: whole text frames, fragments, control frames between fragments, bad frames and close
codes, several per write and split across writes, each judged as RFC 6455 (and wsproto) say."""

from __future__ import annotations

import json
import struct

import httpx
import pytest
import trio

from protocol import CloseCode

from ..conftest import STEP, RunningServer, register
from ..rawws import RawWs, client_frame


def _text(request: dict[str, object]) -> bytes:
    return client_frame(0x1, json.dumps(request).encode())


async def _frames_until(raw: RawWs, count: int) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    with trio.fail_after(STEP):
        while len(frames) < count:
            frame = await raw.read_frame()
            assert frame is not None, f"EOF after {frames}"
            frames.append(frame)
    return frames


async def test_whole_fragmented_and_control_frames_in_one_write_are_answered_in_order(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice = await register(http)
    hello = json.dumps({"type": "hello", "token": alice.token}).encode()
    ping = json.dumps({"type": "ping", "ref": "fragmented"}).encode()
    wire = (
        client_frame(0x1, hello)
        + _text({"type": "ping", "ref": "whole"})
        + client_frame(0x1, ping[:5], fin=False)
        + client_frame(0x9, b"between")
        + client_frame(0x0, ping[5:])
        + _text({"type": "ping", "ref": "after"})
    )
    async with RawWs.open(server.port) as raw:
        assert b" 101 " in await raw.read_response_head()
        await raw.stream.send_all(wire)
        frames = await _frames_until(raw, 5)
    assert [op for op, _ in frames] == [0x1, 0x1, 0xA, 0x1, 0x1]
    assert frames[2][1] == b"between"
    events = [json.loads(payload) for op, payload in frames if op == 0x1]
    assert [e["type"] for e in events] == ["welcome", "pong", "pong", "pong"]
    assert [e.get("ref") for e in events[1:]] == ["whole", "fragmented", "after"]


async def test_frames_split_at_every_byte_are_all_answered(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice = await register(http)
    wire = _text({"type": "hello", "token": alice.token}) + _text({"type": "ping", "ref": "日本"})
    async with RawWs.open(server.port) as raw:
        assert b" 101 " in await raw.read_response_head()
        for k in range(len(wire)):
            await raw.stream.send_all(wire[k : k + 1])
        frames = await _frames_until(raw, 2)
    assert [json.loads(p)["type"] for _, p in frames] == ["welcome", "pong"]
    assert json.loads(frames[1][1])["ref"] == "日本"


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (client_frame(0x1, b'"\xed\xa0\x80"'), 1007),  # an encoded surrogate: not UTF-8
        (client_frame(0x1, b'"\xf0\x9f"', fin=False) + client_frame(0x0, b'"'), 1007),
        (client_frame(0x1, b"{}", rsv=2), CloseCode.PROTOCOL_ERROR),
        (client_frame(0x1, b"{}", mask=False), CloseCode.PROTOCOL_ERROR),
        (client_frame(0x0, b"{}"), CloseCode.PROTOCOL_ERROR),  # continuation of nothing
        (client_frame(0x9, b"", fin=False), CloseCode.PROTOCOL_ERROR),  # fragmented control
        (client_frame(0x5, b""), CloseCode.PROTOCOL_ERROR),  # reserved opcode
        (b"\x81\xfe\x00\x05" + b"\0" * 4 + b"12345", CloseCode.PROTOCOL_ERROR),  # long length
        (client_frame(0x8, struct.pack("!H", 1005)), CloseCode.PROTOCOL_ERROR),
        (client_frame(0x8, struct.pack("!H", 4000) + b"bye"), 4000),
        (client_frame(0x8, b""), CloseCode.NORMAL),
    ],
    # Masks are random: ids by position, so every xdist worker collects the same ids.
    ids=[
        "surrogate",
        "fragmented-bad-utf8",
        "rsv",
        "unmasked",
        "bare-continuation",
        "fragmented-control",
        "reserved-opcode",
        "long-length",
        "close-1005",
        "close-4000",
        "close-empty",
    ],
)
async def test_a_bad_frame_behind_whole_text_frames_closes_with_its_code(
    server: RunningServer, bad: bytes, code: int
) -> None:
    ping = _text({"type": "ping", "ref": "first"})
    async with RawWs.open(server.port) as raw:
        assert b" 101 " in await raw.read_response_head()
        await raw.stream.send_all(ping + bad + ping)
        frames = await _frames_until(raw, 2)
        assert json.loads(frames[0][1])["ref"] == "first"  # the frame before is answered
        opcode, payload = frames[1]
        assert opcode == 0x8
        assert int.from_bytes(payload[:2], "big") == code

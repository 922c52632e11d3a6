"""The listener on a real server: request head limits, per-address caps, accept failures."""

from __future__ import annotations

import re
from pathlib import Path

import trio

from .conftest import STEP, make_config, running_server


async def _exchange(port: int, request: bytes) -> bytes:
    """Send `request` on a fresh connection and read one whole response (head and body)."""
    with trio.fail_after(STEP):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            return await _read_response(stream)


async def _read_response(stream: trio.SocketStream) -> bytes:
    answer = b""
    while True:
        head, sep, body = answer.partition(b"\r\n\r\n")
        if sep:
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if length and len(body) >= int(length[1]):
                return answer
        data = await stream.receive_some(65536)
        if not data:
            return answer
        answer += data


async def test_a_large_head_arriving_in_one_read_is_refused_with_431(tmp_path: Path) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n"
    async with running_server(make_config(tmp_path)) as server:
        answer = await _exchange(server.port, head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


async def test_a_head_just_under_the_limit_is_served(tmp_path: Path) -> None:
    prefix = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
    head = prefix + b"a" * (16 * 1024 - len(prefix) - 4) + b"\r\n\r\n"
    assert len(head) == 16 * 1024
    async with running_server(make_config(tmp_path)) as server:
        answer = await _exchange(server.port, head)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]

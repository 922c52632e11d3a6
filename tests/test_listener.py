"""The listener on a real server: request head limits, per-address caps, accept failures."""

from __future__ import annotations

import logging
import os
import re
import resource
import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from server.listener import Listener
from server.metrics import Metrics

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


def _lowest_free_fd() -> int:
    fd = os.open(os.devnull, os.O_RDONLY)  # a new descriptor is always the lowest free one
    os.close(fd)
    return fd


async def test_accept_failures_are_logged_once_then_counted_until_they_stop(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "server.listener")
    served = trio.Event()

    async def on_http(sock: socket.socket, head: bytes) -> None:
        sock.send(b"HTTP/1.1 204 No Content\r\n\r\n")
        served.set()

    async def on_websocket(*args: object) -> None:
        raise AssertionError("not a WebSocket test")

    metrics = Metrics()
    listener = Listener(
        "127.0.0.1",
        0,
        handshake_timeout=STEP,
        on_websocket=on_websocket,
        on_http=on_http,
        metrics=metrics,
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(listener.run)
        with trio.fail_after(STEP), trio.socket.socket() as client:
            # From here no descriptor can be made: the server's accept fails with EMFILE.
            resource.setrlimit(resource.RLIMIT_NOFILE, (_lowest_free_fd(), hard))
            try:
                await client.connect(("127.0.0.1", port))  # completed by the kernel's backlog
                await trio.sleep(1.0)  # virtual time: ~10 attempts, 0.1 s apart
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await served.wait()
        listener.stop_accepting()
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "server.listener"]
    assert lines[0] == (logging.WARNING, "accept failed: [Errno 24] Too many open files"), lines
    assert len(lines) == 2, lines
    assert metrics.accept_errors >= 5
    repeats = metrics.accept_errors - 1
    assert re.fullmatch(
        rf"accept failed {repeats} more times in the last [\d.]+ s \(EMFILE\), then recovered",
        lines[1][1],
    ), lines
    exported = metrics.exposition()[0].decode()
    assert f"\nhibiki_accept_errors_total {float(metrics.accept_errors)}\n" in exported

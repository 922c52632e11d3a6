"""The listener on a real server: request head limits, per-address caps, accept failures."""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from server.app import serve
from server.ops.metrics import Metrics
from server.transport.address_limits import AddressLimits
from server.transport.listener import Listener

from ..conftest import STEP, make_config, register, running_server
from ..rawws import RawWs


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
    caplog.set_level(logging.INFO, "server.transport.listener")
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
    lines = [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "server.transport.listener"
    ]
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


@asynccontextmanager
async def _serving(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[int, Metrics]]:
    """A real server whose `Metrics` the test reads directly (a scrape would be a connection)."""
    config = make_config(tmp_path, **overrides)
    metrics = Metrics(config.server.server_id)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, config, stop, metrics=metrics))
        try:
            yield port, metrics
        finally:
            stop.set()


async def test_the_connection_over_the_per_address_cap_is_refused_with_503(
    tmp_path: Path,
) -> None:
    caps = {"max_connections_per_address": 3, "max_pending_per_address": 0}
    async with _serving(tmp_path, **caps) as (port, metrics), AsyncExitStack() as clients:
        clients.enter_context(trio.fail_after(STEP))
        for _ in range(3):
            await clients.enter_async_context(await trio.open_tcp_stream("127.0.0.1", port))
        answer = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer
        assert answer.endswith(b"\r\n\r\ntoo many connections from this address"), answer
        assert metrics.connections_refused == {"per_address": 1, "pending_per_address": 0}
        exported = metrics.exposition()[0].decode()
        assert '\nhibiki_connections_refused_total{reason="per_address"} 1.0\n' in exported


async def test_connections_waiting_for_hello_are_capped_and_one_past_hello_is_not(
    tmp_path: Path,
) -> None:
    async with _serving(tmp_path, max_connections_per_address=0, max_pending_per_address=2) as (
        port,
        metrics,
    ):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=STEP) as http:
            alice = await register(http)
        with trio.fail_after(STEP):
            async with AsyncExitStack() as clients:
                await _hello(await _upgraded(port, clients), alice.token)  # past hello
                waiting = [await _upgraded(port, clients) for _ in range(2)]  # and no hello
                refused = await _connected(port, clients)
                assert b"HTTP/1.1 503 " in await refused.read_response_head()
                assert refused.buf == b"too many pending connections from this address"
                assert metrics.connections_refused["pending_per_address"] == 1
                await _hello(waiting[0], alice.token)  # no longer pending: room for one more
                await _upgraded(port, clients)


async def _connected(port: int, clients: AsyncExitStack) -> RawWs:
    raw = await RawWs.connect(port)
    clients.push_async_callback(raw.aclose)
    return raw


async def _upgraded(port: int, clients: AsyncExitStack) -> RawWs:
    raw = await _connected(port, clients)
    assert b" 101 " in await raw.read_response_head()
    return raw


async def _hello(raw: RawWs, token: str) -> RawWs:
    await raw.send_frame(json.dumps({"type": "hello", "token": token}).encode())
    frame = await raw.read_frame()
    assert frame is not None and json.loads(frame[1])["type"] == "welcome", frame
    return raw


async def test_every_slot_is_given_back_when_its_connection_ends() -> None:
    limits = AddressLimits(max_connections=3, max_pending=2)
    finish = trio.Event()
    entered = trio.Semaphore(0)

    async def on_http(sock: socket.socket, head: bytes) -> None:
        entered.release()
        await finish.wait()
        sock.send(b"HTTP/1.1 204 No Content\r\n\r\n")

    async def on_websocket(
        sock: socket.socket, peer: str, head: bytes, request: object, leave_pending: Any
    ) -> None:
        leave_pending()  # as a session does once its hello is accepted
        await on_http(sock, head)

    listener = Listener(
        "127.0.0.1",
        0,
        handshake_timeout=STEP,
        on_websocket=on_websocket,
        on_http=on_http,
        limits=limits,
    )
    upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    with trio.fail_after(STEP):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(listener.run)
            async with AsyncExitStack() as clients:
                for request in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", upgrade):
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    clients.push_async_callback(stream.aclose)
                    await stream.send_all(request)
                    await entered.acquire()  # in its handler: no longer pending
                idle = await trio.open_tcp_stream("127.0.0.1", port)  # pending: sends nothing
                clients.push_async_callback(idle.aclose)
                assert (await _exchange(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(
                    b"HTTP/1.1 503"
                )
                await trio.testing.wait_all_tasks_blocked()
                assert (limits.connections, limits.pending, len(limits)) == (3, 1, 1)
                await idle.aclose()  # the head read sees EOF and gives the slot back
                await trio.testing.wait_all_tasks_blocked()
                assert (limits.connections, limits.pending) == (2, 0)
                finish.set()
            listener.stop_accepting()
    assert (limits.connections, limits.pending, len(limits)) == (0, 0, 0)

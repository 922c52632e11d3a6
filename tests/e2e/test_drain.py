"""Graceful drain of a real server process on SIGTERM: systemd is told STOPPING=1, /readyz goes
503, new WebSocket upgrades are refused, open ones get 1001, and the process exits 0 in time.

(tests/test_shutdown.py checks what the drain keeps: every acked message, resume without gaps.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from client import open_websocket
from protocol import CloseCode

from ..conftest import STEP, create_room, register
from ..rawws import RawWs
from .test_shutdown import server_process

DRAIN_TIMEOUT = 8.0
CLOSE_TIMEOUT = 5.0  # how long the server waits for a peer to answer its close: the drain window


@pytest.fixture
async def notify_socket() -> AsyncIterator[tuple[str, trio.socket.SocketType]]:
    with tempfile.TemporaryDirectory(prefix="hb-") as directory:
        path = os.path.join(directory, "notify")
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            await sock.bind(path)
            yield path, sock


async def _notified(sock: trio.socket.SocketType) -> str:
    with trio.fail_after(STEP * 3):
        return (await sock.recv(4096)).decode()


async def test_sigterm_drains_then_exits_0(
    tmp_path: Path, notify_socket: tuple[str, trio.socket.SocketType]
) -> None:
    notify_path, notify = notify_socket
    config = tmp_path / "hibiki.toml"
    config.write_text(f"[timeouts]\ndrain_timeout = {DRAIN_TIMEOUT}\n")
    env = {"HIBIKI_CLOSE_TIMEOUT": str(CLOSE_TIMEOUT), "NOTIFY_SOCKET": notify_path}
    log = bytearray()
    db = tmp_path / "hibiki.db"
    async with server_process(db, "--config", str(config), env=env, log=log) as (process, port):
        assert "READY=1" in (await _notified(notify)).splitlines()
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=STEP) as http:
            alice = await register(http)
            await create_room(http, alice, "lobby")
            assert (await http.get("/readyz")).status_code == 200

        async with open_websocket(f"ws://127.0.0.1:{port}/ws") as polite:
            await polite.send_message(json.dumps({"type": "hello", "token": alice.token}))
            assert json.loads(await polite.get_message())["type"] == "welcome"
            # A peer that never answers the close keeps the drain open for CLOSE_TIMEOUT.
            silent = await RawWs.connect(port)
            assert b" 101 " in await silent.read_response_head()
            await silent.send_frame(json.dumps({"type": "hello", "token": alice.token}).encode())
            with trio.fail_after(STEP):
                frame = await silent.read_frame()
            assert frame is not None and json.loads(frame[1])["type"] == "welcome"

            process.send_signal(signal.SIGTERM)
            signalled = trio.current_time()
            assert "STOPPING=1" in (await _notified(notify)).splitlines()
            with trio.fail_after(STEP), pytest.raises(ConnectionClosed) as closed:
                while True:
                    await polite.get_message()
            reason = closed.value.reason
            assert reason is not None and reason.code == CloseCode.GOING_AWAY

        # Still draining (the silent peer holds it open): not ready, no new WebSockets.
        async with httpx.AsyncClient(base_url=base, timeout=STEP) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {
                "status": "unavailable",
                "reason": "shutting down",
                "bus": "local",
            }
            metrics = (await http.get("/metrics")).text
            assert 'hibiki_connections_closed_total{reason="shutdown"} 2.0' in metrics
        latecomer = await RawWs.connect(port)
        assert b" 503 " in await latecomer.read_response_head()
        await latecomer.aclose()
        assert process.returncode is None

        with trio.fail_after(STEP):
            assert await silent.read_until_close() == CloseCode.GOING_AWAY
        await silent.aclose()
        with trio.fail_after(DRAIN_TIMEOUT):
            assert await process.wait() == 0
        assert trio.current_time() - signalled < DRAIN_TIMEOUT

    records = [json.loads(line) for line in log.decode().splitlines()]  # JSON: not a terminal
    messages = [r["msg"] for r in records]
    assert messages.index("draining") < messages.index("drained") < messages.index("stopped")
    drained = records[messages.index("drained")]
    assert 0 < drained["drain_s"] < DRAIN_TIMEOUT

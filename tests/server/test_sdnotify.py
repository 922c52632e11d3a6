"""sd_notify over a real datagram socket: READY=1 once serving, STOPPING=1 when draining."""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from server.ops.sdnotify import notify

from ..conftest import STEP, make_config, running_server


@pytest.fixture
async def notify_socket(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[trio.socket.SocketType]:
    """A bound AF_UNIX datagram socket, named by $NOTIFY_SOCKET (a short path: 108-byte limit)."""
    with tempfile.TemporaryDirectory(prefix="hb-") as directory:
        path = os.path.join(directory, "notify")
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            await sock.bind(path)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            yield sock


async def _receive(sock: trio.socket.SocketType) -> dict[str, str]:
    with trio.fail_after(STEP):
        data = await sock.recv(4096)
    return dict(line.split("=", 1) for line in data.decode().splitlines())


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_abstract_namespace_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "hibiki-test-" + secrets.token_hex(8)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STATUS=hello", "READY=1") is True
        assert sock.recv(4096) == b"STATUS=hello\nREADY=1"


def test_unreachable_socket_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert notify("READY=1") is False


async def test_server_sends_ready_once_listening_and_stopping_on_drain(
    tmp_path: Path, notify_socket: trio.socket.SocketType
) -> None:
    async with running_server(make_config(tmp_path)) as server:
        ready = await _receive(notify_socket)
        assert ready["READY"] == "1"
        assert ready["STATUS"] == f"listening on 127.0.0.1:{server.port}"
        server.stop.set()
        stopping = await _receive(notify_socket)
        assert stopping["STOPPING"] == "1"
        with trio.fail_after(STEP):
            await server.done.wait()

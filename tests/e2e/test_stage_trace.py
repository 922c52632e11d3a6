"""The opt-in stage trace (`[ops] stage_trace`): a real server, socket and SQLite file."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest
import trio

from client import open_websocket
from storage.sqlite import _messages as sqlite_messages

from ..conftest import STEP, Peer, create_room, make_config, register, running_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_latency_stages import read_trace, stage_report


@pytest.mark.parametrize("loop_commit", [True, False], ids=["on-the-loop", "on-the-thread"])
async def test_each_message_gets_its_stage_times_in_order(
    tmp_path: Path, loop_commit: bool
) -> None:
    path = tmp_path / "stages.trace"
    unwrapped = sqlite_messages.append_batch
    config = make_config(tmp_path, stage_trace=str(path), sqlite_loop_commit=loop_commit)
    async with running_server(config) as server:
        async with httpx.AsyncClient(base_url=server.http, timeout=STEP) as http:
            alice = await register(http)
            await create_room(http, alice, "traced")
        async with open_websocket(server.ws) as ws:
            peer = Peer(ws)
            await peer.send(type="hello", token=alice.token)
            await peer.expect("welcome")
            for seq in (1, 2):
                sent_us = time.monotonic_ns() // 1000
                await peer.send(type="send", room="traced", text=f"lg:0:{seq}:{sent_us}:pad")
                await peer.expect("message")
                await peer.expect("ack")
        assert sqlite_messages.append_batch is not unwrapped  # stamping while it runs
    assert sqlite_messages.append_batch is unwrapped  # stopped: trace written, job restored
    trace = read_trace(path)
    assert len(trace.messages) == 2
    for stamps in trace.messages:
        client, read, commit_start, commit_end, published, sent, job, commit, job_end = stamps
        assert client <= read <= commit_start <= job <= commit <= job_end <= commit_end
        assert commit_end <= published <= sent
    report = stage_report(trace)
    assert report["messages"] == 2 and report["total"]["p99"] >= report["commit"]["p99"] > 0


async def test_without_the_setting_the_plain_parts_run(tmp_path: Path) -> None:
    unwrapped = sqlite_messages.append_batch
    async with running_server(make_config(tmp_path)) as server:
        async with httpx.AsyncClient(base_url=server.http, timeout=STEP) as http:
            response = await http.get("/healthz")
            assert response.status_code == 200
        assert sqlite_messages.append_batch is unwrapped
    assert not [p for p in await trio.Path(tmp_path).iterdir() if p.name.endswith(".trace")]

"""A real `hibiki serve --db postgresql://...` process: chat, history, resume and a resent
client_id, then a restart on the same database that serves the same history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from client import open_websocket

from ..conftest import STEP, Account, Peer, create_room, join_room, register
from ..postgres import PostgresUrl

ROOT = Path(__file__).resolve().parents[2]
SKIP = ("presence", "typing")


@asynccontextmanager
async def hibiki_serve(db_url: str) -> AsyncIterator[str]:
    """A `hibiki serve` process on `db_url` and a free port: yields its HTTP base URL; SIGTERM
    (the drain) at the end, and it must exit 0."""
    cmd = [sys.executable, "-m", "server.cli", "serve", "--port", "0", "--db", db_url]
    cmd += ["--rate-limit", "0", "--server-id", "pg-e2e"]
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "HIBIKI_LOG_FORMAT": "json",
        "HIBIKI_SCRYPT_N": "1024",
        "HIBIKI_POOL_SIZE": "3",
    }
    async with trio.open_nursery() as nursery:
        run = partial(trio.run_process, cmd, cwd=ROOT, stderr=subprocess.PIPE, check=False, env=env)
        process: trio.Process = await nursery.start(run)
        assert process.stderr is not None
        log = bytearray()
        with trio.fail_after(STEP * 3):
            while b"listening on" not in log:
                chunk = await process.stderr.receive_some()
                assert chunk, log.decode()
                log += chunk
        line = next(ln for ln in log.decode().splitlines() if "listening on" in ln)
        port = int(json.loads(line)["port"])

        async def drain_stderr() -> None:
            while chunk := await process.stderr.receive_some():  # type: ignore[union-attr]
                log.extend(chunk)

        nursery.start_soon(drain_stderr)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            with trio.fail_after(STEP * 2):
                code = await process.wait()
            assert code == 0, log.decode()


@asynccontextmanager
async def peer(
    base: str, account: Account, resume: dict[str, int] | None = None
) -> AsyncIterator[Peer]:
    async with open_websocket(base.replace("http://", "ws://") + "/ws") as ws:
        p = Peer(ws)
        hello: dict[str, Any] = {"type": "hello", "token": account.token}
        if resume is not None:
            hello["resume"] = resume
        await p.send(**hello)
        await p.expect("welcome")
        yield p


async def _history(http: httpx.AsyncClient, account: Account, room: str) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {account.token}"}
    response = await http.get(f"/api/rooms/{room}/messages", params={"limit": 200}, headers=auth)
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def test_hibiki_serve_on_postgresql_chats_keeps_history_and_resumes(
    postgres_url: PostgresUrl,
) -> None:
    url = postgres_url("e2e")
    with trio.fail_after(STEP * 8):
        async with (
            hibiki_serve(url) as base,
            httpx.AsyncClient(base_url=base, timeout=STEP) as http,
        ):
            alice, bob = await register(http, "alice"), await register(http, "bob")
            await create_room(http, alice, "lobby")
            await join_room(http, bob, "lobby")
            async with peer(base, alice) as a:
                async with peer(base, bob) as b:
                    for i in range(1, 4):
                        await a.send(type="send", room="lobby", text=f"m{i}", client_id=f"c{i}")
                        ack = await a.expect("ack", skip=(*SKIP, "message"))
                        assert (ack["seq"], ack["client_id"]) == (i, f"c{i}")
                    got = [await b.expect("message", skip=SKIP) for _ in range(3)]
                    assert [(m["seq"], m["text"]) for m in got] == [(1, "m1"), (2, "m2"), (3, "m3")]
                for i in range(4, 7):  # bob is away
                    await a.send(type="send", room="lobby", text=f"m{i}", client_id=f"c{i}")
                    await a.expect("ack", skip=(*SKIP, "message"))
                await a.send(type="send", room="lobby", text="m2 again", client_id="c2")
                again = await a.expect("ack", skip=(*SKIP, "message"))
                assert (again["id"], again["seq"]) == (got[1]["id"], 2)  # the original
                async with peer(base, bob, resume={"lobby": 3}) as b:
                    missed = [await b.expect("message", skip=SKIP) for _ in range(3)]
                    assert [m["seq"] for m in missed] == [4, 5, 6]
            stored = await _history(http, bob, "lobby")
            assert [m["text"] for m in stored] == [f"m{i}" for i in range(1, 7)]
            assert stored[:3] == got and stored[3:] == missed

        async with (
            hibiki_serve(url) as base,
            httpx.AsyncClient(base_url=base, timeout=STEP) as http,
        ):
            assert await _history(http, bob, "lobby") == stored  # tokens and rows survived
            assert (await http.get("/readyz")).status_code == 200
            async with peer(base, alice) as a:
                await a.send(type="send", room="lobby", text="after restart", client_id="c7")
                ack = await a.expect("ack", skip=(*SKIP, "message"))
                assert ack["seq"] == 7 and ack["id"] > stored[-1]["id"]

"""hibiki started on a migrated PostgreSQL database behaves as it did on the SQLite file it came
from: the same history pages, the same resume, a duplicate client_id answered with the original
id and seq, tokens and passwords that still work, and new messages numbered on from the old."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import trio

from client import open_websocket
from server.cli import main
from tests.conftest import (
    STEP,
    Account,
    Peer,
    RunningServer,
    create_room,
    join_room,
    make_config,
    register,
    running_server,
)


@dataclass
class Observed:
    """What a client saw of one server, to compare the two."""

    pages: list[Any] = field(default_factory=list)
    resumed: list[tuple[int, int, str]] = field(default_factory=list)
    duplicate: tuple[int, int, bool] | None = None


async def _observe(server: RunningServer, alice: Account, bob: Account) -> Observed:
    seen = Observed()
    auth = {"Authorization": f"Bearer {bob.token}"}
    async with httpx.AsyncClient(base_url=server.http, timeout=STEP) as http:
        for query in ("", "?limit=7", "?limit=7&before_seq=20", "?before_seq=3"):
            page = await http.get(f"/api/rooms/lobby/messages{query}", headers=auth)
            assert page.status_code == 200, page.text
            seen.pages.append(page.json())
    async with open_websocket(server.ws) as ws:
        peer = Peer(ws)
        await peer.send(type="hello", token=bob.token, resume={"lobby": 25})
        await peer.expect("welcome")
        for _ in range(5):
            message = await peer.expect("message")
            seen.resumed.append((message["id"], message["seq"], message["text"]))
    async with open_websocket(server.ws) as ws:
        peer = Peer(ws)
        await peer.send(type="hello", token=alice.token)
        await peer.expect("welcome")
        await peer.send(type="send", room="lobby", text="m 4", client_id="c4", ref="dup")
        ack = await peer.expect("ack", skip=("presence", "message"))
        seen.duplicate = (ack["id"], ack["seq"], ack.get("duplicate", False))
    return seen


async def _fill(server: RunningServer) -> tuple[Account, Account]:
    async with httpx.AsyncClient(base_url=server.http, timeout=STEP) as http:
        alice, bob = await register(http, "alice"), await register(http, "bob")
        await create_room(http, alice, "lobby")
        await create_room(http, bob, "quiet")
        await join_room(http, bob, "lobby")
    async with open_websocket(server.ws) as ws:
        peer = Peer(ws)
        await peer.send(type="hello", token=alice.token)
        await peer.expect("welcome")
        for i in range(30):
            await peer.send(type="send", room="lobby", text=f"m {i}", client_id=f"c{i}")
            await peer.expect("ack", skip=("presence", "message"))
    return alice, bob


async def test_hibiki_on_the_migrated_database_serves_the_same_history_and_ids(
    tmp_path: Path, pg_url: str
) -> None:
    sqlite_config = make_config(tmp_path)
    async with running_server(sqlite_config) as server:
        alice, bob = await _fill(server)
        before = await _observe(server, alice, bob)
    assert before.duplicate is not None and before.duplicate[2]  # c4 was stored once
    assert [seq for _, seq, _ in before.resumed] == [26, 27, 28, 29, 30]
    assert [len(page["messages"]) for page in before.pages[1:]] == [7, 7, 2]
    argv = ["migrate", "--from", sqlite_config.storage.db_path, "--to", pg_url, "--quiet"]
    assert await trio.to_thread.run_sync(partial(main, argv)) == 0

    async with running_server(make_config(tmp_path, db_path=pg_url)) as server:
        after = await _observe(server, alice, bob)  # the tokens issued by the old server
        assert after == before
        async with httpx.AsyncClient(base_url=server.http, timeout=STEP) as http:
            login = await http.post(
                "/api/login", json={"name": "alice", "password": "correct horse"}
            )
            assert login.status_code == 200, login.text
        async with open_websocket(server.ws) as ws:
            peer = Peer(ws)
            await peer.send(type="hello", token=alice.token)
            await peer.expect("welcome")
            await peer.send(type="send", room="lobby", text="on postgres", client_id="new")
            ack = await peer.expect("ack", skip=("presence", "message"))
    last = before.pages[0]["messages"][-1]
    # Ids go on past the copied ones (the resend of c4 above used one up on PostgreSQL).
    assert ack["id"] > last["id"] and ack["seq"] == last["seq"] + 1
    with psycopg.connect(pg_url) as conn:  # it was written where the migration put the rest
        stored = conn.execute("SELECT text FROM messages WHERE id = %s", (ack["id"],)).fetchall()
    assert stored == [("on postgres",)]
    # Once hibiki has written there, another pass would mix two histories: refused.
    assert await trio.to_thread.run_sync(partial(main, argv)) == 1

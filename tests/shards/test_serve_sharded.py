"""`hibiki serve --db CATALOG --db-shard A --db-shard B` (a real process, three databases):
chat, history, resume and a duplicate client_id behave as on one database, and each message is
stored on its room's shard, none on the catalog."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import trio

from client import open_websocket
from tests.conftest import STEP, Account, Peer, create_room, join_room, register
from tests.e2e.test_shutdown import server_process
from tests.postgres import TestDatabases

from .conftest import rooms_on


async def _sent(peer: Peer, room: str, text: str, client_id: str) -> dict[str, Any]:
    await peer.send(type="send", room=room, text=text, client_id=client_id)
    return await peer.expect("ack", skip=("presence", "message"))


async def test_hibiki_serve_on_a_catalog_and_two_shards_chats_and_keeps_history(
    databases: TestDatabases,
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    rooms = [names[0] for names in rooms_on(2, 1)]  # one room on each shard
    args = ["--db-shard", shards[0], "--db-shard", shards[1]]
    env = {"HIBIKI_SCRYPT_N": "1024"}
    async with server_process(catalog, *args, env=env) as (_, port):  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=STEP) as http:
            alice, bob = await register(http, "alice"), await register(http, "bob")
            for room in rooms:
                await create_room(http, alice, room)
                await join_room(http, bob, room)
            acks = await _chat(port, alice, bob, rooms)
            for room in rooms:
                page = await http.get(
                    f"/api/rooms/{room}/messages",
                    params={"limit": 3},
                    headers={"Authorization": f"Bearer {bob.token}"},
                )
                assert [m["seq"] for m in page.json()["messages"]] == [3, 4, 5]
                assert [m["id"] for m in page.json()["messages"]] == acks[room][2:]
            listed = await http.get("/api/rooms", headers={"Authorization": f"Bearer {bob.token}"})
            assert {r["name"]: r["last_seq"] for r in listed.json()["rooms"]} == dict.fromkeys(
                rooms, 5
            )
        await _resume_and_duplicate(port, alice, bob, rooms, acks)
    for url, room in zip(shards, rooms, strict=True):
        with psycopg.connect(url) as conn:
            held = conn.execute(
                "SELECT r.name, count(*) FROM shard_messages m JOIN shard_rooms r USING (room_id)"
                " GROUP BY r.name"
            ).fetchall()
        assert held == [(room, 5)]
    with psycopg.connect(catalog) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (0,)


async def _chat(port: int, alice: Account, bob: Account, rooms: list[str]) -> dict[str, list[int]]:
    """Alice sends five messages to each room; Bob receives each live. Ack ids per room."""
    acks: dict[str, list[int]] = {room: [] for room in rooms}
    async with (
        open_websocket(f"ws://127.0.0.1:{port}/ws") as a,
        open_websocket(f"ws://127.0.0.1:{port}/ws") as b,
    ):
        sender, receiver = Peer(a), Peer(b)
        for peer, user in ((sender, alice), (receiver, bob)):
            await peer.send(type="hello", token=user.token)
            await peer.expect("welcome")
        for i in range(5):
            for room in rooms:
                ack = await _sent(sender, room, f"{room} {i}", f"c{i}")
                assert ack["seq"] == i + 1
                acks[room].append(ack["id"])
                live = await receiver.expect("message")
                assert (live["room"], live["seq"], live["id"]) == (room, i + 1, ack["id"])
    ids = [i for room in rooms for i in acks[room]]
    assert len(set(ids)) == len(ids)  # ids are global across the shards
    return acks


async def _resume_and_duplicate(
    port: int, alice: Account, bob: Account, rooms: list[str], acks: dict[str, list[int]]
) -> None:
    async with open_websocket(f"ws://127.0.0.1:{port}/ws") as ws:
        peer = Peer(ws)
        await peer.send(type="hello", token=bob.token, resume=dict.fromkeys(rooms, 3))
        await peer.expect("welcome")
        got = [await peer.expect("message") for _ in range(2 * len(rooms))]
        for room in rooms:
            assert [m["seq"] for m in got if m["room"] == room] == [4, 5]
    async with open_websocket(f"ws://127.0.0.1:{port}/ws") as ws:
        peer = Peer(ws)
        await peer.send(type="hello", token=alice.token)
        await peer.expect("welcome")
        with trio.fail_after(STEP):
            ack = await _sent(peer, rooms[0], "resent", "c1")
        assert (ack["id"], ack["seq"], ack.get("duplicate")) == (acks[rooms[0]][1], 2, True)

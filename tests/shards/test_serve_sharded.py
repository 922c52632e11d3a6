"""`hibiki serve --db CATALOG --db-shard A --db-shard B` (a real process, three databases):
chat, history, resume and a duplicate client_id behave as on one database, and each message is
stored on its room's shard, none on the catalog."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psycopg
import trio

from client import open_websocket
from storage.postgres._connection import target_of
from tests.conftest import STEP, Account, Peer, create_room, join_room, register
from tests.e2e.test_shutdown import server_process
from tests.postgres import LentDatabases

from .conftest import rooms_on


async def _sent(peer: Peer, room: str, text: str, client_id: str) -> dict[str, Any]:
    await peer.send(type="send", room=room, text=text, client_id=client_id)
    return await peer.expect("ack", skip=("presence", "message"))


async def test_hibiki_serve_on_a_catalog_and_two_shards_chats_and_keeps_history(
    databases: LentDatabases,
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


async def _queued(http: httpx.AsyncClient) -> int:
    """The writer's queue depth, from /metrics."""
    body = (await http.get("/metrics")).text
    (line,) = [x for x in body.splitlines() if x.startswith("hibiki_writer_queue_depth ")]
    return int(float(line.split()[1]))


def _lock_waiters(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll what no event announces (a lock wait, the writer's queue), every 10 ms, STEP s."""
    for _ in range(int(STEP / 0.01)):
        if await check():
            return
        await trio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_a_served_batch_over_two_shards_acks_the_free_one_while_the_other_is_held(
    databases: LentDatabases,
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    a, b = (names[0] for names in rooms_on(2, 1, "held"))
    args = ["--db-shard", shards[0], "--db-shard", shards[1]]
    env = {"HIBIKI_SCRYPT_N": "1024"}
    async with (
        server_process(catalog, *args, env=env) as (_, port),  # type: ignore[arg-type]
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=STEP) as http,
    ):
        alice = await register(http, "alice")
        for room in (a, b):
            await create_room(http, alice, room)
        async with open_websocket(f"ws://127.0.0.1:{port}/ws") as ws:
            peer = Peer(ws)
            await peer.send(type="hello", token=alice.token)
            await peer.expect("welcome")
            acks = await _held_batch(http, peer, shards, a, b)
        assert [(x["room"], x["seq"], x["client_id"]) for x in acks] == [
            (a, 1, "a0"),
            (a, 2, "a1"),  # acked while shard 1 was held
            (b, 1, "b0"),
        ]
        scraped = (await http.get("/metrics")).text
    for url in shards:
        assert f'hibiki_shard_commit_seconds_count{{shard="{target_of(url)}"}}' in scraped


async def _held_batch(
    http: httpx.AsyncClient, peer: Peer, shards: list[str], a: str, b: str
) -> list[dict[str, Any]]:
    """a0 holds the writer on shard 0 while a1 and b0 queue behind it (so they are one batch);
    shard 0 is released with shard 1 held: a1's ack must come before shard 1 is released."""
    acks: list[dict[str, Any]] = []
    with psycopg.connect(shards[0]) as hold_a, psycopg.connect(shards[1]) as hold_b:
        hold_a.execute("LOCK TABLE shard_messages IN SHARE MODE")
        await peer.send(type="send", room=a, text="a0", client_id="a0")
        await _until(lambda: trio.to_thread.run_sync(lambda: _lock_waiters(shards[0]) == 1))
        hold_b.execute("LOCK TABLE shard_messages IN SHARE MODE")
        await peer.send(type="send", room=b, text="b0", client_id="b0")
        await peer.send(type="send", room=a, text="a1", client_id="a1")

        async def both_queued() -> bool:
            return await _queued(http) == 2

        await _until(both_queued)
        hold_a.rollback()  # a0 commits; the writer's next batch is [b0, a1]
        for _ in range(2):
            acks.append(await peer.expect("ack", skip=("presence", "message")))
        await _until(lambda: trio.to_thread.run_sync(lambda: _lock_waiters(shards[1]) == 1))
        assert len(acks) == 2  # b0 still held on shard 1
        hold_b.rollback()
        acks.append(await peer.expect("ack", skip=("presence", "message")))
    return acks

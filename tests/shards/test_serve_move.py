"""`hibiki shards move` while two `hibiki serve` processes (two nodes, no bus between them) take
sends for the moving shard's room: every acked message is in the history afterwards, once, with
seqs 1..n, the history from before is unchanged, and neither node was told of the move except
by the fence on the old shard."""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
import psycopg
import trio

from client import open_websocket
from server.cli import main
from storage.routing.shards import logical_shard
from tests.conftest import STEP, Account, Peer, create_room, register
from tests.e2e.test_shutdown import server_process
from tests.postgres import LentDatabases

from .conftest import rooms_on

Acked = tuple[int, int, str]  # id, seq, text


async def _history(port: int, user: Account, room: str) -> list[Acked]:
    """The whole room, walked newest page first (pages of 200, the API's largest)."""
    out: list[Acked] = []
    params: dict[str, int] = {"limit": 200}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=STEP) as http:
        while True:
            page = await http.get(
                f"/api/rooms/{room}/messages",
                params=params,
                headers={"Authorization": f"Bearer {user.token}"},
            )
            assert page.status_code == 200, page.text
            body: dict[str, Any] = page.json()
            out = [(m["id"], m["seq"], m["text"]) for m in body["messages"]] + out
            if not body["has_more"]:
                return out
            params["before_seq"] = body["messages"][0]["seq"]


async def _sender(
    port: int, user: Account, room: str, tag: str, acked: list[Acked], until: trio.Event, extra: int
) -> None:
    """Send (each acked before the next) until `until` is set, then `extra` more."""
    async with open_websocket(f"ws://127.0.0.1:{port}/ws") as ws:
        peer = Peer(ws)
        await peer.send(type="hello", token=user.token)
        await peer.expect("welcome")
        i = 0
        while not until.is_set() or extra > 0:
            if until.is_set():
                extra -= 1
            text = f"{tag} {i}"
            await peer.send(type="send", room=room, text=text, client_id=f"{tag}-{i}")
            ack = await peer.expect("ack", skip=("presence", "message"))
            acked.append((ack["id"], ack["seq"], text))
            i += 1


async def test_two_serving_nodes_keep_every_acked_message_across_a_move(
    databases: LentDatabases,
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    hot = rooms_on(2, 1, "live")[0][0]
    args = ["--db-shard", shards[0], "--db-shard", shards[1]]
    env = {"HIBIKI_SCRYPT_N": "1024"}
    move = ["shards", "move", str(logical_shard(hot)), "--to", shards[1], "--db", catalog, *args]
    acked: list[Acked] = []
    async with (
        server_process(catalog, *args, "--server-id", "a", env=env) as (_, a),  # type: ignore[arg-type]
        server_process(catalog, *args, "--server-id", "b", env=env) as (_, b),  # type: ignore[arg-type]
    ):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{a}", timeout=STEP) as http:
            alice = await register(http, "alice")
            await create_room(http, alice, hot)
        warm = trio.Event()
        warm.set()
        await _sender(a, alice, hot, "warm", acked, warm, 30)
        before = await _history(b, alice, hot)
        moved = trio.Event()
        codes: list[int] = []

        async def run_move() -> None:
            codes.append(await trio.to_thread.run_sync(partial(main, move)))
            moved.set()

        with trio.fail_after(STEP * 3):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_sender, a, alice, hot, "a", acked, moved, 10)
                nursery.start_soon(_sender, b, alice, hot, "b", acked, moved, 10)
                nursery.start_soon(run_move)
        after = await _history(a, alice, hot)
        assert await _history(b, alice, hot) == after
    assert codes == [0]
    assert [seq for _, seq, _ in after] == list(range(1, len(after) + 1))  # no seq reused
    assert sorted(after) == sorted(acked)  # every acked message, once
    assert after[: len(before)] == before
    assert {text.split()[0] for _, _, text in after[len(before) :]} == {"a", "b"}
    # Both nodes' last sends, after the switch, went to the new home: the old one holds nothing.
    held = []
    for url in shards:
        with psycopg.connect(url) as conn:
            held.append(conn.execute("SELECT count(*) FROM shard_messages").fetchone())
    assert held == [(0,), (len(after),)]

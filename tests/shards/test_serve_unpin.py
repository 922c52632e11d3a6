"""`hibiki shards unpin` while a `hibiki serve` node takes sends for the pinned room from two
clients: every acked message is in the history afterwards, once, with seqs 1..n, the history
from before is unchanged, and the pin's database holds nothing."""

from __future__ import annotations

from functools import partial

import httpx
import psycopg
import trio

from server.cli import main
from tests.conftest import STEP, create_room, register
from tests.e2e.test_shutdown import server_process
from tests.postgres import LentDatabases

from .conftest import rooms_on
from .test_serve_move import Acked, _history, _sender


async def test_a_serving_node_keeps_every_acked_message_across_an_unpin(
    databases: LentDatabases,
) -> None:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    hot = rooms_on(2, 1, "live")[0][0]  # its logical shard is on shards[0]
    args = ["--db-shard", shards[0], "--db-shard", shards[1]]
    tool = ["--db", catalog, *args]
    acked: list[Acked] = []
    async with server_process(catalog, *args, env={"HIBIKI_SCRYPT_N": "1024"}) as (_, port):  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=STEP) as http:
            alice = await register(http, "alice")
            await create_room(http, alice, hot)
        warm = trio.Event()
        warm.set()
        await _sender(port, alice, hot, "warm", acked, warm, 20)
        pin = ["shards", "pin", hot, "--to", shards[1], *tool]
        assert await trio.to_thread.run_sync(partial(main, pin)) == 0
        await _sender(port, alice, hot, "pinned", acked, warm, 20)
        before = await _history(port, alice, hot)
        unpinned = trio.Event()
        codes: list[int] = []

        async def unpin() -> None:
            argv = ["shards", "unpin", hot, *tool]
            codes.append(await trio.to_thread.run_sync(partial(main, argv)))
            unpinned.set()

        with trio.fail_after(STEP * 3):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_sender, port, alice, hot, "a", acked, unpinned, 10)
                nursery.start_soon(_sender, port, alice, hot, "b", acked, unpinned, 10)
                nursery.start_soon(unpin)
        after = await _history(port, alice, hot)
    assert codes == [0]
    assert [seq for _, seq, _ in after] == list(range(1, len(after) + 1))  # no seq reused
    assert sorted(after) == sorted(acked)  # every acked message, once
    assert after[: len(before)] == before
    assert {text.split()[0] for _, _, text in after[len(before) :]} == {"a", "b"}
    held = []
    for url in shards:
        with psycopg.connect(url) as conn:
            held.append(conn.execute("SELECT count(*) FROM shard_messages").fetchone())
    assert held == [(len(after),), (0,)]

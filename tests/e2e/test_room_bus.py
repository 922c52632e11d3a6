"""Every room event goes through the bus (real server): in one process it delivers each room's
messages in seq order and never needs the store to fill a gap."""

from __future__ import annotations

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import STEP, Connect, create_room, join_room, register


async def _counter(http: httpx.AsyncClient, name: str) -> float:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} is not exported")


async def test_a_normal_chat_run_delivers_in_order_and_detects_no_gap(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = await register(http), await register(http)
    await create_room(http, alice, "lobby")
    await join_room(http, bob, "lobby")
    auth = {"Authorization": f"Bearer {alice.token}"}
    with trio.fail_after(4 * STEP):
        async with connect(alice) as a, connect(bob) as b:
            await a.expect("presence")  # bob is online
            for i in range(20):  # sent back to back: the writer commits them in batches
                await a.send(type="send", room="lobby", text=f"ws {i}", client_id=f"c{i}")
            await a.send(type="typing", room="lobby")
            for _ in range(20):
                await a.expect("ack", skip=("presence", "typing", "message"))
            batch = {"messages": [{"text": f"http {i}"} for i in range(5)]}
            response = await http.post("/api/rooms/lobby/messages:batch", json=batch, headers=auth)
            assert response.status_code == 201, response.text
            seqs = [(await b.expect("message"))["seq"] for _ in range(25)]
            assert seqs == list(range(1, 26))
            assert any(event["type"] == "typing" for event in b.seen)
            await b.send(type="join", room="lobby", ref="j")  # already a member: no change
            assert (await b.expect("joined"))["last_seq"] == 25
        async with connect(bob, resume={"lobby": 20}) as b2:
            replayed = [(await b2.expect("message"))["seq"] for _ in range(5)]
            assert replayed == [21, 22, 23, 24, 25]
    assert await _counter(http, "hibiki_seq_gaps_detected_total") == 0
    assert await _counter(http, "hibiki_messages_backfilled_total") == 0

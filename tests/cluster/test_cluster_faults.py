"""Faults across processes: Redis restarted mid-burst, a node killed with -9 mid-burst. The store
is the truth; every receiver ends with every message exactly once, in seq order."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed

from ..conftest import STEP, Account, Peer, create_room, join_room, register
from .conftest import Cluster, Node, OwnRedis, http_of, log_lines, open_cluster, peer_on

BURST = 300


async def _accounts(cluster: Cluster, room: str, count: int) -> list[Account]:
    async with http_of(cluster.nodes[0]) as http:
        accounts = [await register(http) for _ in range(count)]
        await create_room(http, accounts[0], room)
        for account in accounts[1:]:
            await join_room(http, account, room)
    return accounts


async def _bus_state(node: Node) -> str:
    async with http_of(node) as http:
        state: str = (await http.get("/healthz")).json()["bus"]
        return state


async def _until_bus(node: Node, state: str) -> None:
    """Poll /healthz (another process: no event to wait on) until its `bus` says `state`."""
    with trio.fail_after(STEP):
        while await _bus_state(node) != state:  # noqa: ASYNC110 (another process's state)
            await trio.sleep(0.05)


async def _collect(peer: Peer, seqs: list[int], until: Callable[[], bool]) -> None:
    """Note the seq of every message event until `until()` holds after one."""
    while not until():
        event = await peer.recv()
        if event["type"] == "message":
            seqs.append(event["seq"])


async def _send_burst(
    peer: Peer,
    acked: dict[str, int],
    count: int,
    *,
    halfway: trio.Event | None = None,
    at: int = BURST // 3,
) -> None:
    """Send `count` messages, pacing on acks (at most 20 in flight); record each ack's seq;
    set `halfway` once `at` are acked."""
    sent = 0
    while len(acked) < count:
        while sent < count and sent - len(acked) < 20:
            await peer.send(type="send", room="burst", text=f"m{sent}", client_id=f"m{sent}")
            sent += 1
        event = await peer.recv()
        if event["type"] == "ack":
            acked[event["client_id"]] = event["seq"]
            if halfway is not None and len(acked) >= at:
                halfway.set()


async def test_redis_restarted_mid_burst_every_receiver_gets_every_message_once(
    cluster_db: str, own_redis: OwnRedis, namespace: str
) -> None:
    with trio.fail_after(STEP * 6):
        async with open_cluster(cluster_db, own_redis.url, namespace, 3) as cluster:
            alice, bob, carol, dave = await _accounts(cluster, "burst", 4)
            n0, n1, n2 = cluster.nodes
            acked: dict[str, int] = {}
            got: dict[str, list[int]] = {"bob": [], "carol": [], "dave": []}
            halfway = trio.Event()
            async with (
                peer_on(n0, alice) as a,
                peer_on(n0, bob) as b,
                peer_on(n1, carol) as c,
                peer_on(n2, dave) as d,
                trio.open_nursery() as nursery,
            ):
                for name, peer in (("bob", b), ("carol", c), ("dave", d)):
                    seqs = got[name]
                    nursery.start_soon(_collect, peer, seqs, lambda s=seqs: len(s) >= BURST)

                async def stop_redis() -> None:
                    await halfway.wait()
                    await own_redis.stop()

                # Redis goes away two thirds into the burst, which ends while it is away: what
                # the other nodes missed then comes from the store (tail check, catch-up after
                # the reconnect), not from the gaps later messages would show.
                nursery.start_soon(stop_redis)
                await _send_burst(a, acked, BURST, halfway=halfway, at=BURST * 2 // 3)
                assert await _bus_state(n1) == "redis: degraded"
                assert (await _bus_state(n0)) == "redis: degraded"
                await own_redis.start()
                for node in cluster.nodes:
                    await _until_bus(node, "redis: ok")
            assert sorted(acked.values()) == list(range(1, BURST + 1))
            for name, seqs in got.items():
                assert seqs == list(range(1, BURST + 1)), name
            async with http_of(n1) as http:
                metrics = (await http.get("/metrics")).text
            assert "hibiki_bus_reconnects_total 1.0" in metrics


async def test_redis_that_stops_answering_is_noticed_and_every_room_catches_up(
    tmp_path: Path, own_redis: OwnRedis, namespace: str
) -> None:
    """SIGSTOP keeps Redis's TCP connections open: the keepalive (PING every 1 s, 2 s to
    answer: the defaults) must say degraded within ~3 s, with one log line per node; messages
    sent while Redis is stopped reach the other node's receiver after SIGCONT (or earlier,
    from the store), exactly once and in order."""
    per_phase = 40
    with trio.fail_after(STEP * 6):
        async with open_cluster(tmp_path, own_redis.url, namespace, 2) as cluster:
            alice, bob, carol = await _accounts(cluster, "burst", 3)
            n0, n1 = cluster.nodes
            acked: dict[str, int] = {}
            got: dict[str, list[int]] = {"bob": [], "carol": []}
            async with (
                peer_on(n0, alice) as a,
                peer_on(n0, bob) as b,
                peer_on(n1, carol) as c,
                trio.open_nursery() as nursery,
            ):
                for name, peer in (("bob", b), ("carol", c)):
                    seqs = got[name]
                    nursery.start_soon(_collect, peer, seqs, lambda s=seqs: len(s) >= 3 * per_phase)
                await _send_burst(a, acked, per_phase)
                own_redis.pause()
                try:
                    paused_at = trio.current_time()
                    await _send_burst(a, acked, 2 * per_phase)  # before the link is declared down
                    for node in cluster.nodes:
                        await _until_bus(node, "redis: degraded")
                    noticed = trio.current_time() - paused_at
                    await _send_burst(a, acked, 3 * per_phase)  # while it is known down
                finally:
                    own_redis.resume()
                for node in cluster.nodes:
                    await _until_bus(node, "redis: ok")
            assert noticed <= 3.0 + 1.5, noticed  # interval + timeout, and a loaded machine
            assert sorted(acked.values()) == list(range(1, 3 * per_phase + 1))
            for name, seqs in got.items():
                assert seqs == list(range(1, 3 * per_phase + 1)), name
            for node in cluster.nodes:
                async with http_of(node) as http:
                    metrics = (await http.get("/metrics")).text
                assert "hibiki_bus_redis_timeouts_total 1.0" in metrics
                assert "hibiki_bus_reconnects_total 1.0" in metrics
                lines = [ln["msg"] for ln in log_lines(node) if ln["logger"] == "server.redis.link"]
                assert [m for m in lines if m != "redis reconnected"] == ["redis connection lost"]


async def test_node_killed_mid_burst_loses_no_acked_message(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 6):
        async with open_cluster(cluster_db, redis_url, namespace, 3) as cluster:
            alice, bob, carol = await _accounts(cluster, "burst", 3)
            n0, n1, n2 = cluster.nodes
            acked: dict[str, int] = {}
            bob_seqs: list[int] = []
            carol_seqs: list[int] = []
            async with peer_on(n2, carol) as c:
                halfway = trio.Event()
                async with trio.open_nursery() as nursery:

                    async def doomed_clients() -> None:
                        try:
                            async with peer_on(n0, alice) as a, peer_on(n0, bob) as b:
                                nursery.start_soon(_until_closed, b, bob_seqs)
                                await _send_burst(a, acked, 10**6, halfway=halfway, at=BURST)
                        except* ConnectionClosed:
                            pass

                    nursery.start_soon(doomed_clients)
                    await halfway.wait()
                    cluster.kill(n0)
                    await n0.process.wait()
                async with http_of(n1) as http:
                    stored = await _stored_seqs(http, carol, "burst")
                # Every ack was for a committed message; carol, live on n2 the whole time, gets
                # all of them (the last ones from the store, by the tail check), once, in order.
                assert len(acked) >= BURST
                assert set(acked.values()) <= set(stored)
                assert stored == list(range(1, len(stored) + 1))
                await _collect(c, carol_seqs, lambda: len(carol_seqs) >= len(stored))
                assert carol_seqs == stored
            # Bob reconnects to another node and resumes: exactly what he missed.
            last_seen = bob_seqs[-1] if bob_seqs else 0
            assert bob_seqs == list(range(1, last_seen + 1))
            async with peer_on(n1, bob, resume={"burst": last_seen}) as b:
                rest: list[int] = []
                await _collect(b, rest, lambda: len(rest) >= len(stored) - last_seen)
                await b.send(type="ping", ref="end")
                while (event := await b.recv())["type"] != "pong":
                    assert event["type"] != "message", event
            assert bob_seqs + rest == stored


async def _until_closed(peer: Peer, seqs: list[int]) -> None:
    try:
        while True:
            event: dict[str, Any] = json.loads(await peer.ws.get_message())
            if event["type"] == "message":
                seqs.append(event["seq"])
    except ConnectionClosed:
        pass


async def _stored_seqs(http: httpx.AsyncClient, user: Account, room: str) -> list[int]:
    seqs: list[int] = []
    before: int | None = None
    headers = {"Authorization": f"Bearer {user.token}"}
    while True:
        params = {"limit": 200} | ({"before_seq": before} if before else {})
        page = (
            await http.get(f"/api/rooms/{room}/messages", params=params, headers=headers)
        ).json()
        seqs = [m["seq"] for m in page["messages"]] + seqs
        if not page["has_more"]:
            return seqs
        before = page["messages"][0]["seq"]

"""The event stream across a crash: a real `hibiki serve` with `[events]` on its own Redis,
messages acked, Redis frozen (SIGSTOP) so their XADDs cannot complete, the node killed with -9,
Redis resumed, the node restarted: every acked message is in the stream, once per (room, seq)
after dedupe, in seq order per room. And two nodes on one database (each backend): one elected
appender; the leader killed with -9, the follower appends the rest within a bound."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import coredis
import httpx
import trio

from client import open_websocket
from server.events import stream_key
from server.events.appender import ELECTION_INTERVAL, POLL_INTERVAL

from ..conftest import STEP, Account, Peer, create_room, register
from .conftest import Cluster, Node, OwnRedis, http_of, open_cluster, peer_on
from .test_cluster_faults import _accounts
from .test_workers import supervised

PARTITIONS = 4
ROOMS = ("ev-a", "ev-b")


async def _send(peer: Peer, room: str, count: int, acked: dict[tuple[str, int], str]) -> None:
    for i in range(count):
        text = f"{room}-{len(acked)}-{i}"
        await peer.send(type="send", room=room, text=text, client_id=text)
        while True:
            event = await peer.recv()
            if event["type"] == "ack":
                acked[(room, event["seq"])] = text
                break


async def _read_stream(
    client: coredis.Redis[bytes], namespace: str, want: set[tuple[str, int]]
) -> list[tuple[str, int]]:
    """Every entry of every partition (XREAD BLOCK: woken by each append) until `want` is in."""
    positions = {stream_key(namespace, p): "0-0" for p in range(PARTITIONS)}
    seen: list[tuple[str, int]] = []
    with trio.fail_after(STEP * 2):
        while not want <= set(seen):
            reply = await client.xread(positions, count=1000, block=1000)
            for key, entries in (reply or {}).items():
                for entry in entries:
                    fields = entry.field_values
                    seen.append((fields[b"room"].decode(), int(fields[b"seq"])))
                    positions[key.decode()] = entry.identifier.decode()
    return seen


async def _metric(node: Node, name: str) -> float:
    async with http_of(node) as http:
        body = (await http.get("/metrics")).text
    line = next(ln for ln in body.splitlines() if ln.startswith(f"{name} "))
    return float(line.split()[-1])


async def _recovered(node: Node) -> float:
    return await _metric(node, "hibiki_events_recovered_total")


async def test_the_follower_appends_the_rest_when_the_elected_appender_is_killed(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    env = {"HIBIKI_EVENTS_ENABLED": "true", "HIBIKI_STREAM_PARTITIONS": str(PARTITIONS)}
    acked: dict[tuple[str, int], str] = {}
    events: coredis.Redis[bytes] = coredis.Redis.from_url(redis_url, decode_responses=False)
    async with open_cluster(cluster_db, redis_url, namespace, 2, env=env) as cluster, events:
        leader, follower = cluster.nodes
        assert await _metric(leader, "hibiki_events_appender_leader") == 1
        assert await _metric(follower, "hibiki_events_appender_leader") == 0
        accounts = await _accounts_in_rooms(cluster)
        async with (
            peer_on(leader, accounts[0]) as on_leader,
            peer_on(follower, accounts[0]) as on_follower,
        ):
            for room in ROOMS:  # both nodes commit; the leader appends all of it
                await _send(on_leader, room, 10, acked)
                await _send(on_follower, room, 10, acked)
            seen = await _read_stream(events, namespace, set(acked))
            assert len(seen) == len(set(seen)) == 40  # once each in normal operation
            cluster.kill(leader)
            await leader.process.wait()
            killed = trio.current_time()
            for room in ROOMS:
                await _send(on_follower, room, 10, acked)  # no leader for a while
            seen = await _read_stream(events, namespace, set(acked))
            took = trio.current_time() - killed
        assert await _metric(follower, "hibiki_events_appender_leader") == 1
        assert set(seen) == set(acked)  # nothing lost; repeats only of a (room, seq)
        for room in ROOMS:
            first = list(dict.fromkeys(seq for r, seq in seen if r == room))
            assert first == sorted(first) == list(range(1, 31))
        # The follower tries every ELECTION_INTERVAL, then reads within POLL_INTERVAL; the
        # slack is for process start-up noise on a shared machine.
        print(f"takeover: all events appended {took:.2f} s after the kill")
        assert took < 2 * ELECTION_INTERVAL + POLL_INTERVAL + 2.0


async def test_kill_9_while_redis_is_frozen_loses_no_acked_event(
    tmp_path: Path, redis_url: str, namespace: str, own_redis: OwnRedis
) -> None:
    env = {
        "HIBIKI_EVENTS_ENABLED": "true",
        "HIBIKI_EVENTS_REDIS_URL": own_redis.url,
        "HIBIKI_STREAM_PARTITIONS": str(PARTITIONS),
    }
    acked: dict[tuple[str, int], str] = {}
    events: coredis.Redis[bytes] = coredis.Redis.from_url(own_redis.url, decode_responses=False)
    async with open_cluster(tmp_path, redis_url, namespace, 1, env=env) as cluster, events:
        node = cluster.nodes[0]
        accounts = await _accounts_in_rooms(cluster)
        async with peer_on(node, accounts[0]) as peer:
            for room in ROOMS:
                await _send(peer, room, 30, acked)
            await _read_stream(events, namespace, set(acked))  # appended while Redis runs
            assert own_redis.process is not None
            os.kill(own_redis.process.pid, signal.SIGSTOP)
            try:
                frozen_before = len(acked)
                for room in ROOMS:
                    await _send(peer, room, 30, acked)  # committed and acked, not appended
                frozen = len(acked) - frozen_before
                cluster.kill(node)
                await node.process.wait()
            finally:
                os.kill(own_redis.process.pid, signal.SIGCONT)
        restarted = await cluster.start_node()
        seen = await _read_stream(events, namespace, set(acked))
        assert set(seen) == set(acked)  # exactly the acked set, after dedupe by (room, seq)
        for room in ROOMS:
            first = list(dict.fromkeys(seq for r, seq in seen if r == room))
            assert first == sorted(first) == list(range(1, 61))
        assert await _recovered(restarted) >= frozen  # re-appended from the store by cursor


async def _accounts_in_rooms(cluster: Cluster) -> list[Account]:
    accounts = await _accounts(cluster, ROOMS[0], 1)
    async with httpx.AsyncClient(base_url=cluster.nodes[0].http, timeout=STEP) as http:
        await create_room(http, accounts[0], ROOMS[1])
    return accounts


async def test_workers_elect_one_appender_and_each_event_is_appended_once(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    env = {
        "HIBIKI_EVENTS_ENABLED": "true",
        "HIBIKI_STREAM_PARTITIONS": str(PARTITIONS),
        "HIBIKI_BUS_NAMESPACE": namespace,
    }
    events: coredis.Redis[bytes] = coredis.Redis.from_url(redis_url, decode_responses=False)
    async with supervised(tmp_path, "--redis", redis_url, env=env) as sup, events:
        await sup.wait_for(lambda r: r["msg"].startswith("event appender: leading"))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sup.port}", timeout=STEP) as http:
            account = await register(http)
            await create_room(http, account, ROOMS[0])
        acked: dict[tuple[str, int], str] = {}
        for _ in range(6):  # new connections: the kernel spreads them over the workers
            async with open_websocket(f"ws://127.0.0.1:{sup.port}/ws") as ws:
                peer = Peer(ws)
                await peer.send(type="hello", token=account.token)
                await peer.expect("welcome")
                await _send(peer, ROOMS[0], 5, acked)
        seen = await _read_stream(events, namespace, set(acked))
        leading = [r for r in sup.records if r["msg"].startswith("event appender: leading")]
    assert len(seen) == len(set(seen)) == 30 == len(acked)  # once each, all of them
    assert len(leading) == 1, leading  # one worker of the three appends

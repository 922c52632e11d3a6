"""Two nodes on one PostgreSQL database, as two hosts would be: senders on both write to the same
room at once, and one node is killed with -9 mid-burst. The database assigns every seq (rooms
locked in the batch transaction), so the room stays gap-free with no duplicates, and every
receiver, on either node, gets each message once, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import trio
from trio_websocket import ConnectionClosed

from ..conftest import STEP, Account, Peer, create_room, join_room, register
from .conftest import POSTGRESQL_ONLY, Cluster, Node, http_of, open_cluster, peer_on

SENDERS = 3  # per node
EACH = 60  # messages per sender
WINDOW = 8  # sends in flight per sender
Delivered = list[tuple[int, str]]  # (seq, client_id) in the order a receiver got them


@dataclass
class Acks:
    """Each acked client_id's seq, from every sender; `reached` is set once `at` are in."""

    seqs: dict[str, int] = field(default_factory=dict)
    at: int = 0
    reached: trio.Event = field(default_factory=trio.Event)

    def note(self, client_id: str, seq: int) -> None:
        assert client_id not in self.seqs, client_id
        self.seqs[client_id] = seq
        if self.at and len(self.seqs) >= self.at:
            self.reached.set()


async def _accounts(cluster: Cluster, count: int) -> list[Account]:
    async with http_of(cluster.nodes[0]) as http:
        accounts = [await register(http) for _ in range(count)]
        await create_room(http, accounts[0], "burst")
        for account in accounts[1:]:
            await join_room(http, account, "burst")
    return accounts


async def _send(peer: Peer, tag: str, acks: Acks, count: int = EACH) -> None:
    """Send `count` messages, at most WINDOW unacked; record each ack's seq by client_id."""
    sent = done = 0
    while done < count:
        while sent < count and sent - done < WINDOW:
            await peer.send(
                type="send", room="burst", text=f"{tag} {sent}", client_id=f"{tag}-{sent}"
            )
            sent += 1
        event = await peer.recv()
        if event["type"] == "ack":
            assert not event.get("duplicate"), event
            acks.note(event["client_id"], event["seq"])
            done += 1


async def _receive(peer: Peer, got: Delivered, count: int) -> None:
    while len(got) < count:
        event = await peer.recv()
        if event["type"] == "message":
            got.append((event["seq"], event["client_id"]))


async def _nothing_more(peer: Peer) -> None:
    await peer.send(type="ping", ref="end")
    while (event := await peer.recv())["type"] != "pong":
        assert event["type"] != "message", event


async def _stored(node: Node, reader: Account) -> Delivered:
    """The room's whole history, oldest first, through `node`'s HTTP API."""
    stored: Delivered = []
    params: dict[str, Any] = {"limit": 200}
    async with http_of(node) as http:
        while True:
            page = await _page(http, reader, params)
            stored[:0] = [(m["seq"], m["client_id"]) for m in page["messages"]]
            if not page["has_more"]:
                return stored
            params["before_seq"] = stored[0][0]


async def _page(http: httpx.AsyncClient, reader: Account, params: dict[str, Any]) -> Any:
    headers = {"Authorization": f"Bearer {reader.token}"}
    response = await http.get("/api/rooms/burst/messages", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _in_send_order(acks: Acks, tag: str, count: int = EACH) -> list[int]:
    return [acks.seqs[f"{tag}-{i}"] for i in range(count)]


@POSTGRESQL_ONLY
async def test_two_nodes_writing_one_room_at_once_keep_seqs_gap_free_and_deliver_once_in_order(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    total = 2 * SENDERS * EACH
    with trio.fail_after(STEP * 6):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            reader0, reader1, *senders = await _accounts(cluster, 2 + 2 * SENDERS)
            n0, n1 = cluster.nodes
            acks = Acks()
            got: dict[str, Delivered] = {"n0": [], "n1": []}
            async with peer_on(n0, reader0) as r0, peer_on(n1, reader1) as r1:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_receive, r0, got["n0"], total)
                    nursery.start_soon(_receive, r1, got["n1"], total)
                    for k, account in enumerate(senders):
                        node = (n0, n1)[k % 2]
                        nursery.start_soon(_burst_from, node, account, f"s{k}", acks)
                await _nothing_more(r0)
                await _nothing_more(r1)
            stored = await _stored(n1, reader1)
    assert len(acks.seqs) == total
    assert sorted(acks.seqs.values()) == list(range(1, total + 1))  # gap-free, no seq twice
    assert stored == sorted((seq, cid) for cid, seq in acks.seqs.items())
    assert got["n0"] == stored and got["n1"] == stored  # once each, in seq order, on both
    for k in range(2 * SENDERS):  # one connection's sends keep their order
        seqs = _in_send_order(acks, f"s{k}")
        assert seqs == sorted(seqs), k
    assert await trio.to_thread.run_sync(_in_database, cluster_db) == (total, total, total)


def _in_database(url: str) -> tuple[int, int, int]:
    """(rows, max seq, the room's last_seq), read from PostgreSQL itself."""
    query = (
        "SELECT count(*), max(m.seq), r.last_seq FROM rooms r JOIN messages m ON m.room_id = r.id"
        " WHERE r.name = 'burst' GROUP BY r.last_seq"
    )
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def _burst_from(node: Node, account: Account, tag: str, acks: Acks) -> None:
    async with peer_on(node, account) as peer:
        await _send(peer, tag, acks)


@POSTGRESQL_ONLY
async def test_a_node_killed_mid_burst_from_both_nodes_loses_no_acked_message(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 6):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            bob, carol, *senders = await _accounts(cluster, 2 + 2 * SENDERS)
            n1 = cluster.nodes[1]
            acks = Acks(at=SENDERS * EACH * 2 // 3)
            bob_got: Delivered = []
            carol_got: Delivered = []
            async with peer_on(n1, carol) as c:
                await _burst_and_kill(cluster, bob, senders, acks, bob_got)
                stored = await _stored(n1, carol)
                # Every ack was for a committed message, with the seq it was stored under.
                assert set(acks.seqs.items()) <= {(cid, seq) for seq, cid in stored}
                assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
                assert len(acks.seqs) >= SENDERS * EACH  # n1's senders all finished
                # carol, live on n1 throughout, gets them all (the last of n0's from the store)
                await _receive(c, carol_got, len(stored))
                await _nothing_more(c)
                assert carol_got == stored
            # bob was on the killed node: he resumes on n1 and gets exactly what he missed.
            last_seen = bob_got[-1][0] if bob_got else 0
            assert bob_got == stored[:last_seen]
            async with peer_on(n1, bob, resume={"burst": last_seen}) as b:
                rest: Delivered = []
                await _receive(b, rest, len(stored) - last_seen)
                await _nothing_more(b)
            assert bob_got + rest == stored


async def _burst_and_kill(
    cluster: Cluster, bob: Account, senders: list[Account], acks: Acks, bob_got: Delivered
) -> None:
    """Senders on both nodes; once `acks.at` are acked, n0 is killed with -9 (its senders and
    bob, there, are cut off); n1's senders finish theirs."""
    n0, n1 = cluster.nodes

    async def doomed(
        account: Account | None,
        tag: str,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with peer_on(n0, account or bob) as peer:
                task_status.started()
                if account is None:
                    await _receive(peer, bob_got, 10**9)
                else:
                    await _send(peer, tag, acks, 10**9)
        except* ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        await nursery.start(doomed, None, "bob")  # welcomed before any send: bob sees seq 1
        for k, account in enumerate(senders):
            if k % 2 == 0:
                nursery.start_soon(doomed, account, f"s{k}")
            else:
                nursery.start_soon(_burst_from, n1, account, f"s{k}", acks)
        await acks.reached.wait()
        cluster.kill(n0)
        await n0.process.wait()

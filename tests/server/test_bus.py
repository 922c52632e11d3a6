"""The room-event bus in one process: `LocalBus` feeds the hub (messages in seq order, typing,
presence) and membership sync, over real socket pairs, a real flusher and a real SQLite file."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from protocol import CloseCode, Message, Typing, encode
from server.chat.connection import ConnState
from server.chat.membership import MembershipSync
from server.chat.membership_invalidation import LocalMembershipInvalidation
from server.chat.user_connections import LocalUserConnections
from server.fanout.bus import NO_CONN, LocalBus
from server.fanout.hub import RoomHub
from server.fanout.presence import LocalOnlineUsers
from server.transport.flusher import Flusher
from server.transport.frames import text_frame
from storage import open_store
from storage.cache import MembershipCache

from ..conftest import STEP
from ..connections import chat_connection


class RecordingBus(LocalBus):
    """A LocalBus that also notes which rooms the hub follows."""

    def __init__(self) -> None:
        super().__init__()
        self.followed: list[tuple[str, str]] = []

    def follow(self, room: str) -> None:
        self.followed.append(("follow", room))

    def unfollow(self, room: str) -> None:
        self.followed.append(("unfollow", room))


@dataclass
class Node:
    """One process's fan-out: bus, presence, hub (running) and flusher (running)."""

    bus: RecordingBus
    hub: RoomHub
    flusher: Flusher
    nursery: trio.Nursery


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    flusher = Flusher()
    bus = RecordingBus()
    hub = RoomHub(flusher, bus=bus, presence=LocalOnlineUsers(bus))
    bus.attach_hub(hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        await nursery.start(hub.run)
        yield Node(bus, hub, flusher, nursery)
        nursery.cancel_scope.cancel()


class Peer:
    """A connection on our side of a socket pair, and the client end that reads its frames."""

    def __init__(self, flusher: Flusher, user: str, user_id: int) -> None:
        ours, self.theirs = socket.socketpair()
        ours.setblocking(False)
        self.theirs.setblocking(False)
        self._ours = ours
        self.conn = chat_connection(ours, flusher, 1 << 20)
        self.conn.user_name, self.conn.user_id = user, user_id
        self.conn.set_state(ConnState.OPEN)
        self._buffer = b""

    def close(self) -> None:
        self._ours.close()
        self.theirs.close()

    async def events(self) -> list[dict[str, Any]]:
        """Every event flushed to the client so far (the flusher has run when all are idle)."""
        await trio.testing.wait_all_tasks_blocked()
        try:
            while True:
                self._buffer += self.theirs.recv(1 << 20)
        except BlockingIOError:
            pass
        events, data, i = [], self._buffer, 0
        while i + 2 <= len(data):
            n, start = data[i + 1] & 0x7F, i + 2
            if n == 126:
                n, start = int.from_bytes(data[i + 2 : i + 4], "big"), i + 4
            if start + n > len(data):
                break
            events.append(json.loads(data[start : start + n]))
            i = start + n
        self._buffer = data[i:]
        return events

    async def next_events(self) -> list[dict[str, Any]]:
        """Wait for at least one event (one sent by a task that is waiting on the store)."""
        with trio.fail_after(STEP):
            while not (events := await self.events()):
                await trio.lowlevel.wait_readable(self.theirs)
        return events


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    opened: list[Peer] = []
    yield opened
    for peer in opened:
        peer.close()


def _peer(node: Node, peers: list[Peer], user: str, user_id: int) -> Peer:
    peer = Peer(node.flusher, user, user_id)
    peers.append(peer)
    return peer


def _message(seq: int) -> bytes:
    return encode(Message(room="r", id=seq, seq=seq, user="a", text=f"m{seq}", ts=0))


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


async def test_messages_published_out_of_order_reach_subscribers_in_seq_order(
    node: Node, peers: list[Peer]
) -> None:
    a, b = _peer(node, peers, "a", 1), _peer(node, peers, "b", 2)
    node.hub.subscribe("r", a.conn)
    node.hub.subscribe("r", b.conn)
    await a.events(), await b.events()  # presence
    with trio.fail_after(STEP):
        for seq in (1, 3, 2, 2, 4):
            node.bus.publish_message("r", seq, _message(seq))
        for peer in (a, b):
            assert [e["seq"] for e in await peer.events()] == [1, 2, 3, 4]
    assert node.hub.gaps_detected == 1 and node.hub.messages_backfilled == 0


async def test_typing_reaches_every_subscriber_but_the_typing_connection(
    node: Node, peers: list[Peer]
) -> None:
    a1, a2 = _peer(node, peers, "a", 1), _peer(node, peers, "a", 1)  # one user, two devices
    b = _peer(node, peers, "b", 2)
    for peer in (a1, a2, b):
        node.hub.subscribe("r", peer.conn)
    for peer in (a1, a2, b):
        await peer.events()  # presence
    typing = encode(Typing(room="r", user="a"))
    node.bus.publish_typing("r", typing, a1.conn.conn_id)
    assert await a1.events() == []
    assert await a2.events() == [{"type": "typing", "room": "r", "user": "a"}]
    assert await b.events() == [{"type": "typing", "room": "r", "user": "a"}]
    node.bus.publish_typing("r", typing, NO_CONN)  # from another process: nobody here is skipped
    assert [len(await peer.events()) for peer in (a1, a2, b)] == [1, 1, 1]


async def test_presence_goes_online_and_offline_with_a_users_first_and_last_connection(
    node: Node, peers: list[Peer]
) -> None:
    a, b1, b2 = (_peer(node, peers, *user) for user in (("a", 1), ("b", 2), ("b", 2)))
    node.hub.subscribe("r", a.conn)
    assert await a.events() == []  # nobody else here: its own `online` is not sent to itself
    node.hub.subscribe("r", b1.conn)
    online = {"type": "presence", "room": "r", "user": "b", "status": "online"}
    assert (await a.events(), await b1.events()) == ([online], [])
    node.hub.subscribe("r", b2.conn, hold=True)  # held (resuming) counts as subscribed
    node.hub.release("r", b2.conn, 0)
    node.hub.unsubscribe("r", b1.conn)
    assert await a.events() == []  # b is still online on its other connection
    node.hub.unsubscribe("r", b2.conn)
    assert await a.events() == [online | {"status": "offline"}]


async def test_a_room_is_followed_from_its_first_subscriber_to_its_last(
    node: Node, peers: list[Peer]
) -> None:
    a, b = _peer(node, peers, "a", 1), _peer(node, peers, "b", 2)
    node.hub.subscribe("r", a.conn, hold=True)
    node.hub.subscribe("r", b.conn)
    node.hub.release("r", a.conn, 0)
    node.bus.publish_message("r", 1, _message(1))
    node.hub.unsubscribe_all(a.conn)
    assert node.bus.followed == [("follow", "r")]
    node.hub.unsubscribe("r", b.conn)
    assert node.bus.followed == [("follow", "r"), ("unfollow", "r")]
    # Tracking ended with the last subscriber: a newcomer starts from the next message seen.
    c = _peer(node, peers, "c", 3)
    node.hub.subscribe("r", c.conn)
    node.bus.publish_message("r", 7, _message(7))
    assert [e.get("seq") for e in await c.events()] == [7]
    assert node.hub.gaps_detected == 0


async def test_a_membership_change_reaches_the_users_other_connections_through_the_bus(
    node: Node, peers: list[Peer], tmp_path: Path
) -> None:
    store = open_store(tmp_path / "bus.db", scrypt_n=2**10)
    await store.open()
    try:
        owner = await store.create_user("owner", "correct horse")
        bob = await store.create_user("bob", "correct horse")
        await store.create_room("r", owner.id)
        cache = MembershipCache(store, 100, 60)
        users = LocalUserConnections()
        memberships = MembershipSync(
            store,
            node.hub,
            node.bus,
            invalidation=LocalMembershipInvalidation(cache),
            connections=users,
            presence=LocalOnlineUsers(node.bus),
        )
        node.bus.attach_memberships(memberships)
        await node.nursery.start(memberships.run)
        phone, laptop = _peer(node, peers, "bob", bob.id), _peer(node, peers, "bob", bob.id)
        memberships.track(phone.conn)
        memberships.track(laptop.conn)

        await store.join_room("r", bob.id)
        await memberships.changed("r", bob.id, True, origin=phone.conn)
        assert "r" in laptop.conn.rooms and "r" not in phone.conn.rooms  # phone joins itself
        assert await cache.is_member("r", bob.id) and cache.misses == 0
        joined = await laptop.next_events()
        assert [(e["type"], e["last_seq"], "ref" in e) for e in joined] == [("joined", 0, False)]
        assert await phone.events() == []

        await store.leave_room("r", bob.id)
        await memberships.changed("r", bob.id, False)  # over HTTP: no origin
        assert await laptop.events() == [{"type": "left", "room": "r"}]
        assert "r" not in laptop.conn.rooms
        assert not await cache.is_member("r", bob.id) and cache.misses == 0
        memberships.untrack(laptop.conn)
        assert users.of_user(bob.id) == [phone.conn]
    finally:
        await store.aclose()


async def test_a_new_room_is_told_to_every_open_connection_but_its_creators(
    node: Node, peers: list[Peer], tmp_path: Path
) -> None:
    store = open_store(tmp_path / "bus.db", scrypt_n=2**10)
    users = LocalUserConnections()
    memberships = MembershipSync(
        store,
        node.hub,
        node.bus,
        invalidation=LocalMembershipInvalidation(MembershipCache(store, 100, 60)),
        connections=users,
        presence=LocalOnlineUsers(node.bus),
    )
    node.bus.attach_memberships(memberships)
    owner, bob_phone, bob_laptop, carol = (
        _peer(node, peers, "owner", 1),
        _peer(node, peers, "bob", 2),
        _peer(node, peers, "bob", 2),
        _peer(node, peers, "carol", 3),
    )
    for peer in (owner, bob_phone, bob_laptop, carol):
        memberships.track(peer.conn)
    carol.conn.close(CloseCode.NORMAL, "")  # closing: nothing more is queued for it
    node.bus.publish_room_created("random", 1)
    for peer in (bob_phone, bob_laptop):
        assert await peer.events() == [{"type": "room_created", "room": "random"}]
    assert await owner.events() == []  # the creator's connections are told `joined` instead
    await trio.testing.wait_all_tasks_blocked()
    assert b"room_created" not in carol.theirs.recv(1 << 16)  # its close frame alone
    assert not any("random" in peer.conn.rooms for peer in peers)  # told, not subscribed


async def test_a_store_failure_while_telling_another_connection_of_a_join_closes_only_it(
    node: Node, peers: list[Peer], tmp_path: Path
) -> None:
    store = open_store(tmp_path / "bus.db", scrypt_n=2**10)
    await store.open()
    bob = await store.create_user("bob", "correct horse")
    await store.create_room("r", bob.id)
    await store.aclose()  # from now on every store call fails
    memberships = MembershipSync(
        store,
        node.hub,
        node.bus,
        invalidation=LocalMembershipInvalidation(MembershipCache(store, 100, 60)),
        connections=LocalUserConnections(),
        presence=LocalOnlineUsers(node.bus),
    )
    node.bus.attach_memberships(memberships)
    await node.nursery.start(memberships.run)
    laptop = _peer(node, peers, "bob", bob.id)
    memberships.track(laptop.conn)
    await memberships.changed("r", bob.id, True)
    await trio.testing.wait_all_tasks_blocked()
    assert laptop.conn.close_code == CloseCode.INTERNAL
    # The task tree is intact: the hub still delivers to others.
    other = _peer(node, peers, "carol", 9)
    node.hub.subscribe("r", other.conn)
    node.bus.publish_message("r", 1, _message(1))
    assert [e.get("seq") for e in await other.events()] == [1]


class _Store:
    """Messages 1..n of room "r", as the store would give them to a gap filler."""

    def __init__(self, n: int) -> None:
        self.messages = [
            Message(room="r", id=s, seq=s, user="a", text=f"m{s}", ts=0) for s in range(1, n + 1)
        ]

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[Message]:
        return [m for m in self.messages if m.seq > after_seq][:limit]


@pytest.fixture
async def backfilled() -> AsyncIterator[Node]:
    """A node whose gaps are filled from `_Store(3)`, as a networked bus's node's are."""
    flusher = Flusher()
    bus = RecordingBus()
    hub = RoomHub(flusher, bus=bus, presence=LocalOnlineUsers(bus), backfill=_Store(3))
    bus.attach_hub(hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        await nursery.start(hub.run)
        yield Node(bus, hub, flusher, nursery)
        nursery.cancel_scope.cancel()


def _seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events if e["type"] == "message"]


async def _seqs_until(peer: Peer, last: int) -> list[int]:
    """Message seqs the peer gets until `last` has come (a gap filler's store read is awaited)."""
    seqs: list[int] = []
    while last not in seqs:
        seqs += _seqs(await peer.next_events())
    return seqs


async def test_a_resumed_connection_never_gets_again_what_its_replay_carried(
    backfilled: Node, peers: list[Peer]
) -> None:
    """A replay read 1..3 from the store after the room's floor was read at 0; the first live
    message (4) opens a gap from the floor, filled from the store for the room's other
    subscribers: the resumed connection must not get 1..3 twice (it did: 1..3, then 1..4)."""
    node = backfilled
    a, b = _peer(node, peers, "a", 1), _peer(node, peers, "b", 2)
    node.hub.subscribe("r", b.conn)  # live, with no store read of its own (a plain hello)
    node.hub.subscribe("r", a.conn, hold=True)
    node.hub.catch_up("r", 0)  # the floor: the store's last_seq once the bus covered the room
    for seq in (1, 2, 3):  # the replay, from the store
        a.conn.enqueue(text_frame(_message(seq)))
    node.hub.release("r", a.conn, 3)
    node.bus.publish_message("r", 4, _message(4))
    assert await _seqs_until(b, 4) == [1, 2, 3, 4]  # the gap filled for b
    assert _seqs(await a.events()) == [1, 2, 3, 4]  # each once
    node.bus.publish_message("r", 5, _message(5))
    assert (_seqs(await a.events()), _seqs(await b.events())) == ([5], [5])


async def test_a_message_in_flight_past_the_replay_is_not_delivered_twice(
    node: Node, peers: list[Peer]
) -> None:
    """The replay read seq 2, committed but not yet published; its publish comes after the
    release: the released connection must skip it, and still get typing meanwhile."""
    a, b = _peer(node, peers, "a", 1), _peer(node, peers, "b", 2)
    node.hub.subscribe("r", b.conn)
    node.bus.publish_message("r", 1, _message(1))
    node.hub.subscribe("r", a.conn, hold=True)
    for seq in (1, 2):
        a.conn.enqueue(text_frame(_message(seq)))
    node.hub.release("r", a.conn, 2)
    node.bus.publish_typing("r", encode(Typing(room="r", user="b")), b.conn.conn_id)
    assert [e["type"] for e in await a.events()] == ["message", "message", "typing"]
    node.bus.publish_message("r", 2, _message(2))
    node.bus.publish_message("r", 3, _message(3))
    assert _seqs(await a.events()) == [3]
    assert _seqs(await b.events()) == [1, 2, 3]

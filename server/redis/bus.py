"""The room-event bus between processes, over Redis sharded pub/sub (server.fanout.bus's protocol).

Each event is delivered to this process's hub at once, then queued for Redis; a sender task
pipelines everything queued in one round trip (`SPUBLISH` each). Echoes of our own events are
ignored by their origin id: same-node receivers never wait for Redis, and never get a message
twice. Other processes' events arrive on the subscriber connection and go to the hub (messages
through its sequencer: seq order, once, gaps filled from the store) or to membership sync.

Channels: rooms map to `partitions` channels `{ns}:room:{p}` (p = crc32(room) % partitions; the
hash tag `{p}` keeps a partition in one cluster slot); a process subscribes only to partitions
it has local subscribers of. Membership changes, new rooms, per-user events (read state), room
setting and role changes and removals go to one channel that every process subscribes to,
`{ns}:membership:{m}`, in the order they were published.

Envelope (binary, network byte order), then the room (UTF-8), then the payload:
    kind u8 | origin 16 bytes | sent_at f64 (unix s) | a i64 | b i64 | room length u16
    kind 1 message:    a = seq,     b = 0,             payload = encoded `message` event
    kind 2 event:      a = 0,       b = excluded conn, payload = encoded `typing`/`presence`
    kind 3 membership: a = user id, b = origin conn,   payload = b"1" joined / b"0" left
    kind 4 new room:   a = creator, b = 0,             payload = empty
    kind 5 user event: a = user id, b = origin conn,   payload = encoded event (`unread`), room ""
    kind 6 room changed: a = 0,     b = excluded conn, payload = `room_updated`/`member_updated`
    kind 7 removal:    a = user id, b = 0,             payload = encoded `removed`
Connection ids mean something only in their origin process: a receiver treats them as NO_CONN.

Redis is a lossy carrier; the store is the truth. After every (re)subscription in force, each
live room of that partition is caught up from the store; every `tail_interval` the idle live
rooms are compared with the store's last seq (a lost last message), all of them in one store
read; while Redis is away, events are delivered locally only and the same checks fill other
nodes' messages in from the store.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Collection
from typing import Protocol

import trio

from server.fanout.bus import NO_CONN, ConnId, MembershipEvents, RoomEvents
from server.ops.metrics import LATENCY_BUCKETS, Histogram
from server.redis.bus_link import BusLink
from server.redis.link import RedisUnavailable
from storage import StorageError

_log = logging.getLogger(__name__)

_HEADER = struct.Struct("!B16sdqqH")
KIND_MESSAGE, KIND_EVENT, KIND_MEMBERSHIP, KIND_ROOM_CREATED, KIND_USER = 1, 2, 3, 4, 5
KIND_ROOM_CHANGED, KIND_REMOVAL = 6, 7
QUEUE_LIMIT = 10_000  # envelopes waiting for the sender; past it they are dropped (and counted)


class LiveRooms(RoomEvents, Protocol):
    """What this bus feeds: the hub, which can also be told what the store says."""

    def catch_up(self, room: str, last_seq: int) -> None: ...

    def idle_rooms(self) -> list[tuple[str, int]]: ...


class LastSeqSource(Protocol):
    """What the bus reads from the store: rooms' last committed seqs."""

    async def last_seq(self, room: str) -> int: ...

    async def last_seqs(self, rooms: Collection[str]) -> dict[str, int]: ...


def encode_envelope(
    kind: int, origin: bytes, room: str, a: int, b: int, payload: bytes, sent_at: float
) -> bytes:
    name = room.encode()
    return _HEADER.pack(kind, origin, sent_at, a, b, len(name)) + name + payload


def decode_envelope(data: bytes) -> tuple[int, bytes, float, int, int, str, bytes]:
    """(kind, origin, sent_at, a, b, room, payload); ValueError (struct.error, Unicode) if bad."""
    kind, origin, sent_at, a, b, size = _HEADER.unpack_from(data)
    start = _HEADER.size
    if len(data) < start + size:
        raise ValueError("envelope shorter than its room")
    room = data[start : start + size].decode()
    return kind, origin, sent_at, a, b, room, data[start + size :]


class RedisBus:
    """A `RoomBus` across processes; the caller runs `link.run` and `bus.run` in its nursery."""

    def __init__(
        self,
        link: BusLink,
        store: LastSeqSource,
        *,
        partitions: int = 64,
        tail_interval: float = 2.0,
        cover_timeout: float = 2.0,
    ) -> None:
        self._link = link
        self._store = store
        self._partitions = partitions
        self._tail_interval = tail_interval
        self._cover_timeout = cover_timeout
        self._origin = os.urandom(16)
        self._hub: LiveRooms | None = None  # attached before anything is published
        self._memberships: MembershipEvents | None = None
        self._channels = [link.key("room", tag=str(p)).encode() for p in range(partitions)]
        self._partition_of = {channel: p for p, channel in enumerate(self._channels)}
        self._membership_channel = link.key("membership", tag="m").encode()
        self._rooms: dict[int, set[str]] = {}  # partition -> followed rooms
        self._in_force: dict[int, trio.Event] = {}  # partition -> set once subscribed
        self._queue: list[tuple[bytes, bytes]] = []
        self._wake = trio.Event()
        self._catch_up: set[str] = set()  # rooms to compare with the store
        self._catch_up_wake = trio.Event()
        self.published = 0
        self.received = 0
        self.dropped = 0  # envelopes not sent (queue full, Redis away) or not understood
        self.lag_seconds = Histogram(LATENCY_BUCKETS)
        link.on_message(self._received, self._subscribed)
        link.on_reconnect(self._resubscribing)
        link.subscribe(self._membership_channel)

    def attach_hub(self, hub: LiveRooms) -> None:
        self._hub = hub

    def attach_memberships(self, handler: MembershipEvents) -> None:
        self._memberships = handler

    @property
    def status(self) -> str:
        """What /healthz and /readyz report as `bus`."""
        return "redis: ok" if self._link.healthy else "redis: degraded"

    @property
    def reconnects(self) -> int:
        return self._link.reconnects

    @property
    def timeouts(self) -> int:
        return self._link.timeouts

    def partition(self, room: str) -> int:
        return zlib.crc32(room.encode()) % self._partitions

    # Publishing: deliver here now, then queue for the other processes. --------------------
    def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        if self._hub is not None:
            self._hub.publish_message(room, seq, payload)
        self._enqueue(self.partition(room), KIND_MESSAGE, room, seq, 0, payload)

    def publish_typing(self, room: str, payload: bytes, exclude: ConnId) -> None:
        if self._hub is not None:
            self._hub.publish_event(room, payload, exclude)
        self._enqueue(self.partition(room), KIND_EVENT, room, 0, exclude, payload)

    def publish_presence(self, room: str, payload: bytes, exclude: ConnId) -> None:
        if self._hub is not None:
            self._hub.publish_event(room, payload, exclude)
        self._enqueue(self.partition(room), KIND_EVENT, room, 0, exclude, payload)

    def publish_membership(self, user_id: int, room: str, member: bool, origin: ConnId) -> None:
        if self._memberships is not None:
            self._memberships.membership_changed(user_id, room, member, origin)
        flag = b"1" if member else b"0"
        self._enqueue(-1, KIND_MEMBERSHIP, room, user_id, origin, flag)

    def publish_room_created(self, room: str, creator: int) -> None:
        if self._memberships is not None:
            self._memberships.room_created(room, creator)
        self._enqueue(-1, KIND_ROOM_CREATED, room, creator, 0, b"")

    def publish_user_event(self, user_id: int, payload: bytes, origin: ConnId) -> None:
        if self._memberships is not None:
            self._memberships.user_event(user_id, payload, origin)
        self._enqueue(-1, KIND_USER, "", user_id, origin, payload)

    def publish_room_changed(self, room: str, payload: bytes, exclude: ConnId) -> None:
        if self._memberships is not None:
            self._memberships.room_changed(room, payload, exclude)
        self._enqueue(-1, KIND_ROOM_CHANGED, room, 0, exclude, payload)

    def publish_removal(self, user_id: int, room: str, payload: bytes) -> None:
        if self._memberships is not None:
            self._memberships.member_removed(user_id, room, payload)
        self._enqueue(-1, KIND_REMOVAL, room, user_id, 0, payload)

    def _enqueue(self, partition: int, kind: int, room: str, a: int, b: int, data: bytes) -> None:
        if not self._link.healthy or len(self._queue) >= QUEUE_LIMIT:
            self.dropped += 1  # the other processes catch up from the store
            return
        channel = self._membership_channel if partition < 0 else self._channels[partition]
        envelope = encode_envelope(kind, self._origin, room, a, b, data, time.time())
        self._queue.append((channel, envelope))
        self._wake.set()

    # Following: subscribe to a partition while it has a local subscriber. ------------------
    def follow(self, room: str) -> None:
        p = self.partition(room)
        rooms = self._rooms.setdefault(p, set())
        rooms.add(room)
        if len(rooms) == 1:
            self._in_force[p] = trio.Event()
            self._link.subscribe(self._channels[p])

    def unfollow(self, room: str) -> None:
        p = self.partition(room)
        rooms = self._rooms.get(p)
        if rooms is None:
            return
        rooms.discard(room)
        if not rooms:
            del self._rooms[p]
            self._in_force.pop(p, None)
            self._link.unsubscribe(self._channels[p])

    async def covered(self, room: str) -> None:
        """Wait (bounded) for the room's subscription, then lower its floor to the store's
        last seq: what this reader is about to read from (server.fanout.sequencer)."""
        event = self._in_force.get(self.partition(room))
        if event is not None and self._link.healthy:
            with trio.move_on_after(self._cover_timeout):
                await event.wait()
        last = await self._store.last_seq(room)
        if self._hub is not None:
            self._hub.catch_up(room, last)

    # Receiving. ----------------------------------------------------------------------------
    def _received(self, channel: bytes, data: bytes) -> None:
        try:
            kind, origin, sent_at, a, _b, room, payload = decode_envelope(data)
        except (ValueError, struct.error):
            self.dropped += 1
            _log.warning("bus envelope not understood", extra={"channel": channel[:100]})
            return
        if origin == self._origin:
            return  # delivered here when it was published
        self.received += 1
        hub, memberships = self._hub, self._memberships
        if kind == KIND_MESSAGE and hub is not None:
            self.lag_seconds.observe(max(time.time() - sent_at, 0.0))
            hub.publish_message(room, a, payload)
        elif kind == KIND_EVENT and hub is not None:
            hub.publish_event(room, payload, NO_CONN)
        elif kind == KIND_MEMBERSHIP and memberships is not None:
            memberships.membership_changed(a, room, payload == b"1", NO_CONN)
        elif kind == KIND_ROOM_CREATED and memberships is not None:
            memberships.room_created(room, a)
        elif kind == KIND_USER and memberships is not None:
            memberships.user_event(a, payload, NO_CONN)
        elif kind == KIND_ROOM_CHANGED and memberships is not None:
            memberships.room_changed(room, payload, NO_CONN)
        elif kind == KIND_REMOVAL and memberships is not None:
            memberships.member_removed(a, room, payload)

    def _subscribed(self, channel: bytes) -> None:
        """A partition's subscription is in force: what it missed is caught up from the store."""
        p = self._partition_of.get(channel)
        if p is None or p not in self._rooms:
            return
        self._in_force[p].set()
        self._catch_up.update(self._rooms[p])
        self._catch_up_wake.set()

    def _resubscribing(self) -> None:
        """Redis came back: every subscription is being made again; none is in force yet."""
        for p in self._rooms:
            self._in_force[p] = trio.Event()

    # Tasks. -------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The sender, the catch-up reader and the tail check, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send)
            nursery.start_soon(self._catch_up_rooms)
            nursery.start_soon(self._tail_check)
            task_status.started()

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            try:
                await self._link.publish(batch)
                self.published += len(batch)
            except RedisUnavailable:
                self.dropped += len(batch)

    async def _catch_up_rooms(self) -> None:
        while True:
            await self._catch_up_wake.wait()
            self._catch_up_wake = trio.Event()
            rooms, self._catch_up = self._catch_up, set()
            await self._compare(sorted(rooms))

    async def _tail_check(self) -> None:
        """Idle live rooms against the store: a lost last message is filled within an interval.
        One store read per interval, however many rooms are idle."""
        while True:
            await trio.sleep(self._tail_interval)
            if self._hub is not None:
                idle = self._hub.idle_rooms()
                if idle:
                    await self._compare([room for room, _delivered in idle])

    async def _compare(self, rooms: list[str]) -> None:
        try:
            last = await self._store.last_seqs(rooms)
        except StorageError:
            _log.exception("bus catch-up: the store failed", extra={"rooms": len(rooms)})
            return
        if self._hub is not None:
            for room, seq in last.items():
                self._hub.catch_up(room, seq)

"""Who is online in a room, over every node: counts per node in Redis, with expiry.

Per (room, user) each node keeps its own connection count (as `LocalOnlineUsers`) and, while it
is above zero, an entry in Redis: `ns:{presence}:user:{room}:{user}` holds node -> expiry, and
`ns:{presence}:room:{room}` holds user -> the latest expiry of their nodes (what `online` reads)
(all under one hash tag, so that the scripts work on a Redis Cluster: presence is one slot). A
heartbeat task refreshes this node's entries every `heartbeat` seconds with a `ttl`: a node that
crashes stops refreshing, and its entries run out.

Announcements follow the cluster-wide state, decided atomically in Redis (Lua): "online" by the
node whose entry was the user's first live one, "offline" by the node that removed the last.
Expired entries are swept by every node's heartbeat; the sweep that removes a user announces
them offline, so a crashed node's users go offline within ttl + heartbeat seconds (20 s by
default), once. An occasional duplicate "online" is possible (a user reconnecting to another
node before their crashed node's entry was swept); a missing "offline" is not.

`arrived`/`departed` never await: they update the local count and queue the (room, user) for the
sync task, which coalesces. While Redis is away `online` answers from this node's counts,
announcements wait until Redis is back (a user who came and went meanwhile is not announced),
and this node's entries expire elsewhere (its users look offline to other nodes until then).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable
from typing import Literal

import trio
from coredis.commands.script import Script

from protocol import Presence, encode
from server.fanout.bus import NO_CONN, ConnId, RoomBus
from server.redis._link import REDIS_DOWN, RedisFaults, RedisLinkLike, text

TTL = 15.0  # seconds an entry lives without a refresh
HEARTBEAT = 5.0  # seconds between refreshes (and sweeps)
BEAT_PIPELINE = 100  # a heartbeat's refreshes (and sweeps) sent per round trip
_RETRY = 0.5  # seconds before a sync that failed is tried again
_TAG = "{presence}"  # the hash tag of every presence key (one cluster slot)

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS: room zset, user zset, rooms set. ARGV: user, node, ttl ms, room. 1: the user's first.
_ARRIVE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local first = redis.call('ZCARD', KEYS[2]) == 0
local expiry = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], expiry, ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], 'GT', expiry, ARGV[1])
-- Outlives its entries, so that a sweep finds (and announces) those of a crashed node.
redis.call('PEXPIRE', KEYS[1], 4 * tonumber(ARGV[3]))
redis.call('SADD', KEYS[3], ARGV[4])
if first then return 1 end
return 0
"""
)
# KEYS: room zset, user zset. ARGV: user, node. 1: this removed the user's last live entry.
_DEPART = (
    _NOW
    + """
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local latest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #latest == 0 then
  redis.call('DEL', KEYS[2])
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZADD', KEYS[1], latest[2], ARGV[1])
return 0
"""
)
# KEYS: room zset, rooms set. ARGV: user zset key prefix, room. The users it took offline.
_SWEEP = (
    _NOW
    + """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, user in ipairs(gone) do
  redis.call('ZREM', KEYS[1], user)
  redis.call('DEL', ARGV[1] .. user)
end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return gone
"""
)
_ONLINE = _NOW + "return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')"


class RedisOnlineUsers:
    """`OnlineUsers` over every node sharing the Redis."""

    def __init__(
        self,
        bus: RoomBus,
        link: RedisLinkLike,
        node_id: str,
        faults: RedisFaults,
        *,
        ttl: float = TTL,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self._bus = bus
        self._link = link
        self._node = node_id
        self._faults = faults
        self._ttl_ms = str(round(ttl * 1000))
        self._heartbeat = heartbeat
        self._counts: dict[str, dict[str, int]] = {}
        self._published: set[tuple[str, str]] = set()  # entries this node holds in Redis
        # (room, user) -> (the connection that changed it, a serial of the change)
        self._dirty: dict[tuple[str, str], tuple[ConnId, int]] = {}
        self._serial = itertools.count()
        self._wake = trio.Event()
        self._beat_now = trio.Event()
        self._arrive, self._depart = Script(script=_ARRIVE), Script(script=_DEPART)
        self._sweep, self._online = Script(script=_SWEEP), Script(script=_ONLINE)
        link.on_reconnect(self._beat_now.set)

    def arrived(self, room: str, user: str, conn: ConnId) -> None:
        users = self._counts.setdefault(room, {})
        count = users.get(user, 0)
        users[user] = count + 1
        if count == 0:
            self._changed(room, user, conn)

    def departed(self, room: str, user: str, conn: ConnId) -> None:
        users = self._counts[room]
        count = users[user] - 1
        if count:
            users[user] = count
            return
        del users[user]
        if not users:
            del self._counts[room]
        self._changed(room, user, conn)

    async def online(self, room: str) -> list[str]:
        here = set(self._counts.get(room, ()))
        try:
            users: list[str | bytes] = await self._online(
                [self._room_key(room)], [], client=self._link.client
            )
        except REDIS_DOWN as exc:
            self._faults.failed(exc)
            return sorted(here)
        return sorted(here.union(text(user) for user in users))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The sync task (announcements) and the heartbeat (refresh and sweep)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sync_forever)
            nursery.start_soon(self._beat_forever)
            task_status.started()

    def _changed(self, room: str, user: str, conn: ConnId) -> None:
        self._dirty[(room, user)] = (conn, next(self._serial))
        self._wake.set()

    async def _sync_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.sync()
            except REDIS_DOWN as exc:
                self._faults.failed(exc)
                self._wake.set()
                await trio.sleep(_RETRY)

    async def sync(self) -> None:
        """Bring this node's Redis entries in line with its counts; announce what changed.
        Raises REDIS_DOWN (the changes not yet made stay queued)."""
        while self._dirty:
            (room, user), change = next(iter(self._dirty.items()))
            conn = change[0]
            wanted = user in self._counts.get(room, ())
            held = (room, user) in self._published
            if wanted and not held:
                if await self._refresh(room, user):
                    self._announce(room, user, conn, "online")
                self._published.add((room, user))
            elif held and not wanted:
                keys = [self._room_key(room), self._user_key(room, user)]
                took_last: int = await self._depart(
                    keys, [user, self._node], client=self._link.client
                )
                self._published.discard((room, user))
                if took_last:
                    self._announce(room, user, conn, "offline")
            if self._dirty.get((room, user)) == change:  # not changed again meanwhile
                del self._dirty[(room, user)]
        self._faults.succeeded()

    async def _beat_forever(self) -> None:
        while True:
            with trio.move_on_after(self._heartbeat):
                await self._beat_now.wait()
            self._beat_now = trio.Event()
            try:
                await self.beat()
            except REDIS_DOWN as exc:
                self._faults.failed(exc)

    async def beat(self) -> None:
        """Refresh this node's entries, then sweep every room's expired ones (announcing those
        users offline), `BEAT_PIPELINE` scripts per round trip: a node in 1,000 rooms would
        otherwise spend 2,000 sequential round trips per heartbeat. Raises REDIS_DOWN."""
        held = list(self._published)
        for start in range(0, len(held), BEAT_PIPELINE):
            entries = held[start : start + BEAT_PIPELINE]
            async with self._link.client.pipeline(transaction=False) as pipe:
                firsts: list[Awaitable[int]] = [
                    self._arrive(*self._arrival(room, user), client=pipe) for room, user in entries
                ]
            for (room, user), first in zip(entries, firsts, strict=True):
                if await first:  # it had expired and been swept meanwhile
                    self._announce(room, user, NO_CONN, "online")
        rooms_key = self._rooms_key()
        rooms = [text(raw) for raw in await self._link.client.smembers(rooms_key)]
        for start in range(0, len(rooms), BEAT_PIPELINE):
            names = rooms[start : start + BEAT_PIPELINE]
            async with self._link.client.pipeline(transaction=False) as pipe:
                sweeps: list[Awaitable[list[str | bytes]]] = [
                    self._sweep(
                        [self._room_key(room), rooms_key],
                        [self._user_key(room, ""), room],
                        client=pipe,
                    )
                    for room in names
                ]
            for room, sweep in zip(names, sweeps, strict=True):
                for name in await sweep:
                    self._announce(room, text(name), NO_CONN, "offline")
        self._faults.succeeded()

    async def _refresh(self, room: str, user: str) -> bool:
        first: int = await self._arrive(*self._arrival(room, user), client=self._link.client)
        return bool(first)

    def _arrival(self, room: str, user: str) -> tuple[list[str], list[str]]:
        """The keys and arguments of `_ARRIVE` for this node's entry of (room, user)."""
        keys = [self._room_key(room), self._user_key(room, user), self._rooms_key()]
        return keys, [user, self._node, self._ttl_ms, room]

    # Every presence key shares the hash tag `{presence}`: each script touches a room's zset, a
    # user's zset and the rooms set at once, which a Redis Cluster allows only within one slot.
    def _rooms_key(self) -> str:
        return self._link.key(_TAG, "rooms")

    def _room_key(self, room: str) -> str:
        return self._link.key(_TAG, "room", room)

    def _user_key(self, room: str, user: str) -> str:
        # The room's length keeps (room "a", user "b:c") apart from (room "a:b", user "c").
        return self._link.key(_TAG, "user", str(len(room)), room, user)

    def _announce(
        self, room: str, user: str, conn: ConnId, status: Literal["online", "offline"]
    ) -> None:
        payload = encode(Presence(room=room, user=user, status=status))
        self._bus.publish_presence(room, payload, conn)

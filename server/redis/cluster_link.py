"""One process's link to a Redis Cluster: the bus's interface of `RedisLink`, shard by shard.

    link = RedisClusterLink("redis+cluster://10.0.0.1:7000,10.0.0.2:7000", namespace="chat1")

A bus channel (`{ns}:{p}:room`) lives in the slot of its hash tag (server.redis.slots), and the
slot on one primary (`CLUSTER SLOTS`, server.redis._cluster_map). The link keeps one subscriber
connection per primary that owns a wanted channel (opened when the first one is subscribed)
and one publisher connection per primary published to; `publish` sends each batch's `SPUBLISH`
commands to their owners, pipelined, in one round trip per primary.

Any loss (a connection to one primary breaks, a `MOVED` or `CLUSTERDOWN` answer, a `sunsubscribe`
we did not ask for, which Redis sends when a channel's slot migrates) ends the whole session:
every connection closes, the slot map is read again from any reachable node, the reconnect
callbacks run (the bus then treats every partition as not yet in force, and catches each live
room up from the store once its subscription is back), and every wanted channel is subscribed
again. Simpler than mending one shard, and the recovery path is the single-Redis one.

Idle primaries are watched as on one Redis: a PING on each subscriber connection (answered in
subscribed mode as `pong`) and on each publisher connection every `ping_interval`, and no answer
within `ping_timeout` ends the session like a loss (counted in `timeouts`): a stopped or hung
primary keeps its TCP connections open, so only the keepalive can tell.

`client` is a `coredis.RedisCluster` for the shared state (presence, rate limit, caches): their
multi-key scripts keep their keys under one hash tag. Unlike the single Redis, the cluster must
answer once at start: the client needs its slot map before any command can be routed, so `run`
waits (retrying, logging once) until a seed answers before it reports started.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import coredis
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import RedisClusterError

from server.redis._cluster_map import Address, SlotMap, parse_cluster_url
from server.redis._cluster_nodes import LINK_ERRORS, NodeConnection, connect_node, read_slot_map
from server.redis.link import (
    PING_INTERVAL,
    PING_TIMEOUT,
    RETRY_FIRST,
    RETRY_MAX,
    MessageHandler,
    RedisUnavailable,
    SubscribedHandler,
    namespaced_key,
)
from server.redis.resp import RedisReplyError, command
from server.redis.slots import key_slot

_log = logging.getLogger(__name__)
_PING = command(b"PING")


@dataclass
class _Shard:
    """One primary's subscriber connection in this session: what to send it, what is pending."""

    address: Address
    outgoing: list[bytes] = field(default_factory=list)
    wake: trio.Event = field(default_factory=trio.Event)
    leaving: dict[bytes, int] = field(default_factory=dict)  # our SUNSUBSCRIBEs not yet answered
    pong: trio.Event = field(default_factory=trio.Event)  # the last PING was answered


class RedisClusterLink:
    """`RedisLink`'s interface (key, client, healthy, reconnects, on_reconnect, on_message,
    subscribe, unsubscribe, publish, run) over the primaries of a Redis Cluster."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        connect_timeout: float = 2.0,
        ping_interval: float = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
    ) -> None:
        self.namespace = namespace
        self._url = parse_cluster_url(url)
        self.client: coredis.RedisCluster[bytes] = coredis.RedisCluster(
            startup_nodes=[{"host": host, "port": port} for host, port in self._url.seeds],
            username=self._url.username,
            password=self._url.password,
            ssl=self._url.tls,
            decode_responses=False,
            connect_timeout=connect_timeout,
            stream_timeout=ping_timeout,
        )
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self.healthy = False
        self.reconnects = 0
        self.timeouts = 0  # sessions ended because a PING went unanswered
        self.slot_map_reads = 0  # how often the map was (re)read: once per session
        self._connected_once = False
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._on_message: MessageHandler = lambda channel, payload: None
        self._on_subscribed: SubscribedHandler = lambda channel: None
        self._wanted: set[bytes] = set()
        self._known: list[Address] = list(self._url.seeds)  # where to ask for the slot map
        self._map = SlotMap([])
        self._shards: dict[Address, _Shard] = {}
        self._publishers: dict[Address, NodeConnection] = {}
        self._pub_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._session: trio.CancelScope | None = None

    @property
    def subscriber_shards(self) -> set[Address]:
        """The primaries this session has a subscriber connection to (or is opening one)."""
        return set(self._shards)

    def key(self, *parts: str | int, tag: str | None = None) -> str:
        return namespaced_key(self.namespace, *parts, tag=tag)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after every new session (something was lost: state may be stale)."""
        self._reconnect_callbacks.append(callback)

    def on_message(self, handler: MessageHandler, subscribed: SubscribedHandler) -> None:
        self._on_message, self._on_subscribed = handler, subscribed

    def subscribe(self, channel: bytes) -> None:
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._to_shard(channel, b"SSUBSCRIBE")

    def unsubscribe(self, channel: bytes) -> None:
        if channel in self._wanted:
            self._wanted.discard(channel)
            shard = self._to_shard(channel, b"SUNSUBSCRIBE")
            if shard is not None:
                shard.leaving[channel] = shard.leaving.get(channel, 0) + 1

    def _to_shard(self, channel: bytes, verb: bytes) -> _Shard | None:
        """Queue `verb channel` for the owner's subscriber connection (opened if it is the
        first); nothing while no session is up (the next one subscribes every wanted channel)."""
        nursery = self._nursery
        if not self.healthy or nursery is None:
            return None
        address = self._map.owner(key_slot(channel))
        if address is None:
            self._lost(ValueError(f"no primary serves the slot of {channel!r}"))
            return None
        shard = self._shards.get(address)
        if shard is None:
            shard = self._shards[address] = _Shard(address)
            nursery.start_soon(self._serve_shard, shard)
        shard.outgoing.append(command(verb, channel))
        shard.wake.set()
        return shard

    async def publish(self, messages: list[tuple[bytes, bytes]]) -> None:
        """`SPUBLISH` each (channel, payload) on its owner, one round trip per primary (in
        parallel); `RedisUnavailable` if no session is up or any primary fails."""
        async with self._pub_lock:
            if not self.healthy:
                raise RedisUnavailable("no session with the redis cluster")
            batches: dict[Address, list[bytes]] = {}
            try:
                for channel, data in messages:
                    address = self._map.owner(key_slot(channel))
                    if address is None:
                        raise ValueError(f"no primary serves the slot of {channel!r}")
                    batches.setdefault(address, []).append(command(b"SPUBLISH", channel, data))
                with trio.fail_after(self._connect_timeout):
                    conns = [(await self._publisher(a), cmds) for a, cmds in batches.items()]
                    for conn, cmds in conns:
                        await conn.stream.send_all(b"".join(cmds))
                    for conn, cmds in conns:
                        for _ in cmds:
                            if isinstance(reply := await conn.replies.read(), RedisReplyError):
                                raise reply
            except LINK_ERRORS as exc:
                self._lost(exc)
                raise RedisUnavailable(str(exc)) from exc

    async def _publisher(self, address: Address) -> NodeConnection:
        conn = self._publishers.get(address)
        if conn is None:
            conn = self._publishers[address] = await self._connect(address)
        return conn

    def _lost(self, exc: BaseException) -> None:
        if self._session is not None:
            _log.warning("redis cluster session lost", extra={"error": str(exc)})
            self._session.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a session up until cancelled; after a loss, retry with a growing pause (reset
        once a session has lasted RETRY_MAX: a primary that refuses at once backs off)."""
        async with contextlib.AsyncExitStack() as stack:
            await self._enter_client(stack)
            task_status.started()
            pause = RETRY_FIRST
            while True:
                began = trio.current_time()
                try:
                    await self._serve()
                except LINK_ERRORS as exc:
                    if self._connected_once and pause == RETRY_FIRST:
                        _log.warning("redis cluster unreachable", extra={"error": str(exc)})
                finally:
                    await self._down()
                if trio.current_time() - began >= RETRY_MAX:
                    pause = RETRY_FIRST
                await trio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX)

    async def _enter_client(self, stack: contextlib.AsyncExitStack) -> None:
        """Enter the coredis client, which reads the slot map: wait (retrying) until a seed
        answers, since no shared-state command can be routed before."""
        pause = RETRY_FIRST
        while True:
            try:
                await stack.enter_async_context(self.client)
                return
            except (RedisClusterError, RedisConnectionError, OSError) as exc:
                if pause == RETRY_FIRST:
                    _log.warning("redis cluster unreachable at start", extra={"error": str(exc)})
            await trio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX)

    async def _down(self) -> None:
        self.healthy = False
        self._session = self._nursery = None
        self._shards = {}
        publishers, self._publishers = self._publishers, {}
        with trio.CancelScope(shield=True):
            for conn in publishers.values():
                await conn.stream.aclose()

    async def _serve(self) -> None:
        """One session: the slot map, then shard connections as channels need them."""
        self._map = await read_slot_map(self._known, self._url, self._connect_timeout)
        self.slot_map_reads += 1
        self._known = list(dict.fromkeys([*self._url.seeds, *self._map.primaries]))
        with trio.CancelScope() as session:
            self._session = session
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.healthy = True
                if self._connected_once:
                    self.reconnects += 1
                    _log.info("redis cluster reconnected", extra={"reconnects": self.reconnects})
                    for callback in self._reconnect_callbacks:
                        callback()
                self._connected_once = True
                for channel in sorted(self._wanted):
                    self._to_shard(channel, b"SSUBSCRIBE")
                await self._keep_publishers_alive()

    async def _connect(self, address: Address) -> NodeConnection:
        return await connect_node(address, self._url, self._connect_timeout)

    async def _serve_shard(self, shard: _Shard) -> None:
        """One primary's subscriber connection; any failure of it ends the session."""
        try:
            conn = await self._connect(shard.address)
        except LINK_ERRORS as exc:
            self._lost(exc)
            return
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._until_lost, self._write_subscriptions, shard, conn)
                nursery.start_soon(self._until_lost, self._keep_shard_alive, shard, conn)
                await self._until_lost(self._read_pushes, shard, conn)
        finally:
            with trio.CancelScope(shield=True):
                await conn.stream.aclose()

    async def _until_lost(
        self,
        part: Callable[[_Shard, NodeConnection], Awaitable[None]],
        shard: _Shard,
        conn: NodeConnection,
    ) -> None:
        """Run one side of a shard's connection; a failure cancels the session (`run` starts
        the next one), it never reaches a nursery."""
        try:
            await part(shard, conn)
        except LINK_ERRORS as exc:
            self._lost(exc)

    async def _keep_shard_alive(self, shard: _Shard, conn: NodeConnection) -> None:
        """PING the primary's subscriber connection every interval (its reader sets
        `shard.pong`); silent past the timeout ends the session."""
        while True:
            await trio.sleep(self._ping_interval)
            shard.pong = pong = trio.Event()
            shard.outgoing.append(_PING)
            shard.wake.set()
            with trio.move_on_after(self._ping_timeout):
                await pong.wait()
                continue
            self._timed_out(shard.address)
            return

    async def _keep_publishers_alive(self) -> None:
        """PING every publisher connection every interval, behind any publish in flight (one
        stuck on its reply counts too); silent past the timeout ends the session."""
        while True:
            await trio.sleep(self._ping_interval)
            with trio.move_on_after(self._ping_timeout):
                async with self._pub_lock:
                    try:
                        for conn in list(self._publishers.values()):
                            await conn.stream.send_all(_PING)
                            if isinstance(reply := await conn.replies.read(), RedisReplyError):
                                raise reply
                    except LINK_ERRORS as exc:
                        self._lost(exc)
                        return
                continue
            self._timed_out(None)
            return

    def _timed_out(self, address: Address | None) -> None:
        self.timeouts += 1
        where = "a primary" if address is None else f"{address[0]}:{address[1]}"
        self._lost(TimeoutError(f"{where} did not answer PING within {self._ping_timeout} s"))

    async def _write_subscriptions(self, shard: _Shard, conn: NodeConnection) -> None:
        while True:
            await shard.wake.wait()
            shard.wake = trio.Event()
            data, shard.outgoing = b"".join(shard.outgoing), []
            if data:
                await conn.stream.send_all(data)

    async def _read_pushes(self, shard: _Shard, conn: NodeConnection) -> None:
        while True:
            reply = await conn.replies.read()
            if isinstance(reply, RedisReplyError):
                raise reply  # MOVED, CLUSTERDOWN, ...: read the map again
            if reply == b"PONG" or (isinstance(reply, list) and reply[:1] == [b"pong"]):
                shard.pong.set()  # (`+PONG` while nothing is subscribed on it)
                continue
            if not isinstance(reply, list) or len(reply) < 3:
                continue
            kind, channel, body = reply[0], reply[1], reply[2]
            if not isinstance(channel, bytes):
                continue
            if kind == b"smessage" and isinstance(body, bytes):
                self._on_message(channel, body)
            elif kind == b"ssubscribe" and channel in self._wanted:
                self._on_subscribed(channel)
            elif kind == b"sunsubscribe":
                pending = shard.leaving.get(channel, 0)
                if pending > 1:
                    shard.leaving[channel] = pending - 1
                elif pending == 1:
                    del shard.leaving[channel]
                else:
                    raise RedisReplyError(f"slot of {channel!r} moved (sunsubscribe)")

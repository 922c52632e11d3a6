"""Cross-node notifications (a membership changed, a token was revoked) over one pub/sub channel,
and which nodes are alive to hear them.

What the shared-state parts need from a bus is `ControlBus`: `publish_control(kind, payload)`,
which never awaits, and `on_control(kind, handler)`. `RedisControlChannel` implements it with
plain PUBLISH/SUBSCRIBE on `{ns}:control` and tasks of its own; the Redis room bus can carry the
same two calls instead. Delivery is at most once (pub/sub drops while a subscriber is away):
every receiver bounds the damage of a lost notification itself (L1 TTLs, L1 flush on reconnect).
A node ignores its own notifications (it applied them before publishing).

A sender that must know its notification was applied everywhere (a logout) publishes it with
`ack=` a request id from `awaiting_acks()`: each receiver answers with an `ack` notification to
the sender once its handlers have returned (so what they do synchronously, such as closing
sockets, is done). The nodes there are to answer are the live ones: each node keeps an entry in
the sorted set `{ns}:nodes` (node id -> expiry, Redis's clock) while subscribed, refreshed every
`heartbeat` seconds with a `ttl`, and removes it when it stops; a crashed node's entry runs out.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Protocol

import anyio
import trio
from coredis.commands.script import Script

from server.redis._link import REDIS_DOWN, RedisFaults, RedisLinkLike, text

ControlHandler = Callable[[str], None]

_QUEUE = 1024  # notifications waiting to be published; more are dropped (and counted)
_RETRY = 0.5  # seconds between attempts to resubscribe while Redis is away
NODE_TTL = 15.0  # seconds a node's entry in `{ns}:nodes` lives without a refresh
NODE_HEARTBEAT = 5.0  # seconds between refreshes
_ACK = "ack"  # the kind of the answer to a notification published with `ack=`

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS: the nodes zset. ARGV: node, ttl ms. Refreshes this node's entry, sweeps expired ones.
_BEAT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 4 * tonumber(ARGV[2]))
"""
)
_LIVE = _NOW + "return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')"


class ControlBus(Protocol):
    def publish_control(self, kind: str, payload: str, *, ack: str | None = None) -> None:
        """Tell every other node; never awaits, may be lost. With `ack` (from
        `awaiting_acks`), each node that applied it answers."""

    def on_control(self, kind: str, handler: ControlHandler) -> None:
        """Call `handler(payload)` for each `kind` notification from another node."""


class Acks:
    """The nodes that answered one request id so far."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.nodes: set[str] = set()
        self.changed = trio.Event()

    def heard(self, node: str) -> None:
        self.nodes.add(node)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, nodes: set[str]) -> None:
        """Return once every node of `nodes` has answered."""
        while not nodes <= self.nodes:
            await self.changed.wait()


class RedisControlChannel:
    def __init__(
        self,
        link: RedisLinkLike,
        node_id: str,
        faults: RedisFaults,
        *,
        node_ttl: float = NODE_TTL,
        heartbeat: float = NODE_HEARTBEAT,
    ) -> None:
        self._link = link
        self._node = node_id
        self._faults = faults
        self._channel = link.key("control")
        self._nodes_key = link.key("nodes")
        self._ttl_ms = str(round(node_ttl * 1000))
        self._heartbeat = heartbeat
        self._beat, self._live = Script(script=_BEAT), Script(script=_LIVE)
        self._handlers: dict[str, list[ControlHandler]] = {}
        self._waiting: dict[str, Acks] = {}
        self._send, self._outbox = trio.open_memory_channel[str](_QUEUE)
        self.dropped = 0

    def publish_control(self, kind: str, payload: str, *, ack: str | None = None) -> None:
        note = {"kind": kind, "payload": payload, "node": self._node}
        if ack is not None:
            note["ack"] = ack
        try:
            self._send.send_nowait(json.dumps(note))
        except trio.WouldBlock:
            self.dropped += 1

    def on_control(self, kind: str, handler: ControlHandler) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    @contextmanager
    def awaiting_acks(self) -> Iterator[Acks]:
        """A fresh request id, and the answers to it while inside."""
        acks = Acks(f"{self._node}:{secrets.token_hex(8)}")
        self._waiting[acks.request_id] = acks
        try:
            yield acks
        finally:
            del self._waiting[acks.request_id]

    async def live_nodes(self) -> set[str]:
        """The other nodes whose entry has not run out; raises REDIS_DOWN."""
        nodes: list[str | bytes] = await self._live([self._nodes_key], [], client=self._link.client)
        return {text(node) for node in nodes} - {self._node}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish what is queued, deliver what arrives and keep this node's entry alive; started
        once subscribed (or once the first attempt failed: a node starts without Redis)."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._subscribe)
                nursery.start_soon(self._publish)
                await nursery.start(self._keep_alive)
                task_status.started()
        finally:
            await self._leave()

    async def _publish(self) -> None:
        async for frame in self._outbox:
            try:
                await self._link.client.publish(self._channel, frame)
            except REDIS_DOWN as exc:
                self._faults.failed(exc)  # lost, like any pub/sub message
            else:
                self._faults.succeeded()

    async def _keep_alive(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Started after the first refresh (or its failure): a node that serves is live."""
        await self._refresh()
        task_status.started()
        while True:
            await trio.sleep(self._heartbeat)
            await self._refresh()

    async def _refresh(self) -> None:
        try:
            await self._beat(
                [self._nodes_key], [self._node, self._ttl_ms], client=self._link.client
            )
        except REDIS_DOWN as exc:
            self._faults.failed(exc)

    async def _leave(self) -> None:
        """Stopping: other nodes need not wait for this one (best effort, briefly)."""
        # If Redis is away, the entry runs out by itself.
        with trio.CancelScope(shield=True), trio.move_on_after(_RETRY), suppress(*REDIS_DOWN):
            await self._link.client.zrem(self._nodes_key, [self._node])

    async def _subscribe(self, *, task_status: trio.TaskStatus[None]) -> None:
        started = False
        while True:
            try:
                async with self._link.client.pubsub(
                    channels=[self._channel], ignore_subscribe_messages=True, retry_policy=None
                ) as subscription:
                    if not started:
                        task_status.started()
                        started = True
                    async for message in subscription:
                        if message["type"] == "message":
                            self._deliver(text(message["data"]))
            except* REDIS_DOWN as lost:  # coredis's subscriber task group raises it in groups
                self._faults.failed(lost.exceptions[0])
            except* anyio.ClosedResourceError:
                # coredis's cleanup unsubscribing on a connection already gone (a shutdown's
                # cancel, or Redis lost): nothing is left to unsubscribe.
                pass
            if not started:
                task_status.started()
                started = True
            await trio.sleep(_RETRY)

    def _deliver(self, frame: str) -> None:
        note = json.loads(frame)
        sender = note["node"]
        if sender == self._node:
            return
        if note["kind"] == _ACK:
            acks = self._waiting.get(note["payload"])
            if acks is not None and note.get("to") == self._node:
                acks.heard(sender)
            return
        for handler in self._handlers.get(note["kind"], ()):
            handler(note["payload"])
        request_id = note.get("ack")
        if request_id is not None:  # after the handlers: what they did is done
            self._answer(request_id, sender)

    def _answer(self, request_id: str, to: str) -> None:
        frame = json.dumps({"kind": _ACK, "payload": request_id, "node": self._node, "to": to})
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            self.dropped += 1

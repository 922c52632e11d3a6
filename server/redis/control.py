"""Cross-node notifications (a membership changed, a token was revoked) over one pub/sub channel.

What the shared-state parts need from a bus is `ControlBus`: `publish_control(kind, payload)`,
which never awaits, and `on_control(kind, handler)`. `RedisControlChannel` implements it with
plain PUBLISH/SUBSCRIBE on `{ns}:control` and tasks of its own; the Redis room bus can carry the
same two calls instead. Delivery is at most once (pub/sub drops while a subscriber is away):
every receiver bounds the damage of a lost notification itself (L1 TTLs, L1 flush on reconnect).
A node ignores its own notifications (it applied them before publishing).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol

import anyio
import trio

from server.redis._link import REDIS_DOWN, RedisFaults, RedisLinkLike, text

ControlHandler = Callable[[str], None]

_QUEUE = 1024  # notifications waiting to be published; more are dropped (and counted)
_RETRY = 0.5  # seconds between attempts to resubscribe while Redis is away


class ControlBus(Protocol):
    def publish_control(self, kind: str, payload: str) -> None:
        """Tell every other node; never awaits, may be lost."""

    def on_control(self, kind: str, handler: ControlHandler) -> None:
        """Call `handler(payload)` for each `kind` notification from another node."""


class RedisControlChannel:
    def __init__(self, link: RedisLinkLike, node_id: str, faults: RedisFaults) -> None:
        self._link = link
        self._node = node_id
        self._faults = faults
        self._channel = link.key("control")
        self._handlers: dict[str, list[ControlHandler]] = {}
        self._send, self._outbox = trio.open_memory_channel[str](_QUEUE)
        self.dropped = 0

    def publish_control(self, kind: str, payload: str) -> None:
        frame = json.dumps({"kind": kind, "payload": payload, "node": self._node})
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            self.dropped += 1

    def on_control(self, kind: str, handler: ControlHandler) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish what is queued and deliver what arrives; started once subscribed (or once
        the first attempt failed: a node starts without Redis)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._subscribe)
            nursery.start_soon(self._publish)
            task_status.started()

    async def _publish(self) -> None:
        async for frame in self._outbox:
            try:
                await self._link.client.publish(self._channel, frame)
            except REDIS_DOWN as exc:
                self._faults.failed(exc)  # lost, like any pub/sub message
            else:
                self._faults.succeeded()

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
        if note["node"] == self._node:
            return
        for handler in self._handlers.get(note["kind"], ()):
            handler(note["payload"])

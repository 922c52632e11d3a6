"""Writes to the L2 cache that must not be lost while Redis is away, then a notification.

A membership change or a revocation updates (or deletes) the L2 entry in Redis before the other
nodes are told to drop their L1 entries (they would otherwise read the old value again from L2).
Callers never await: `L2Writes` queues the write, coalesced by key (the latest wins), and its
task applies them in order, retrying every `_RETRY` seconds while Redis is away, so an L2 entry
is never left stale past a change for longer than the outage. After each write it calls the
write's `then` (publish the notification).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from server.redis._link import REDIS_DOWN, RedisFaults, RedisLinkLike

_RETRY = 0.5  # seconds between attempts while Redis is away


class _Write:
    __slots__ = ("then", "ttl_ms", "value")

    def __init__(self, value: str | None, ttl_ms: int, then: Callable[[], None]) -> None:
        self.value = value  # None: delete
        self.ttl_ms = ttl_ms
        self.then = then


class L2Writes:
    def __init__(self, link: RedisLinkLike, faults: RedisFaults) -> None:
        self._link = link
        self._faults = faults
        self._queued: dict[str, _Write] = {}
        self._wake = trio.Event()

    def set(self, key: str, value: str, ttl_ms: int, then: Callable[[], None]) -> None:
        self._queue(key, _Write(value, ttl_ms, then))

    def delete(self, key: str, then: Callable[[], None]) -> None:
        self._queue(key, _Write(None, 0, then))

    def _queue(self, key: str, write: _Write) -> None:
        self._queued.pop(key, None)  # a newer write goes last, after the writes queued before it
        self._queued[key] = write
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.flush()
            except REDIS_DOWN as exc:
                self._faults.failed(exc)
                self._wake.set()
                await trio.sleep(_RETRY)

    async def flush(self) -> None:
        """Apply every queued write; raises REDIS_DOWN with the rest still queued."""
        client = self._link.client
        while self._queued:
            key, write = next(iter(self._queued.items()))
            if write.value is None:
                await client.delete([key])
            else:
                await client.set(key, write.value, px=write.ttl_ms)
            if self._queued.get(key) is write:  # not replaced while we wrote
                del self._queued[key]
            write.then()
        self._faults.succeeded()

"""Password-hashing slots shared fairly between clients: a flood waits for its own turns.

A `trio.CapacityLimiter` is one FIFO: 50 logins from one address queue ahead of everybody else's,
and a real user's login waited behind all of them (3-4 s instead of 70 ms, issue #9). Here each
key (client address) has its own FIFO, and each freed slot goes to the next key in turn
(round-robin): a caller waits for at most one release per other key with requests waiting,
however many each has queued. A key's queue is bounded, so a flood is refused rather than held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from protocol import ChatError


class QueueFull(ChatError):
    """The key already has `max_waiting_per_key` requests waiting."""


class _Waiter:
    __slots__ = ("granted", "woken")

    def __init__(self) -> None:
        self.woken = trio.Event()
        self.granted = False  # a slot was handed over: it must be used or passed on


class FairLimiter:
    """`slots` concurrent holders; waiting callers are served round-robin by key."""

    def __init__(self, slots: int, max_waiting_per_key: int) -> None:
        if slots < 1 or max_waiting_per_key < 0:
            raise ValueError("slots must be at least 1 and max_waiting_per_key not negative")
        self._free = slots
        self._max_waiting = max_waiting_per_key
        # Keys in turn order (dicts keep insertion order); a served key goes to the back.
        self._queues: dict[str, deque[_Waiter]] = {}

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Hold a slot for the block; `QueueFull` at once if `key` has too many waiting."""
        await self.acquire(key)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, key: str) -> None:
        if self._free and not self._queues:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._free -= 1
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        queue = self._queues.get(key)
        if queue is not None and len(queue) >= self._max_waiting:
            await trio.lowlevel.checkpoint()
            raise QueueFull(f"{len(queue)} requests from {key} are already waiting")
        if queue is None:
            queue = self._queues[key] = deque()
        waiter = _Waiter()
        queue.append(waiter)
        served = False
        try:
            await waiter.woken.wait()
            served = True
        finally:
            if not served:  # cancelled while waiting: leave, or pass on a slot granted meanwhile
                self._withdraw(key, waiter)

    def release(self) -> None:
        """Give the slot to the first waiter of the next key in turn, or free it."""
        if not self._queues:
            self._free += 1
            return
        key = next(iter(self._queues))
        queue = self._queues.pop(key)
        waiter = queue.popleft()
        if queue:
            self._queues[key] = queue  # to the back of the turn order
        waiter.granted = True
        waiter.woken.set()

    def waiting(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def _withdraw(self, key: str, waiter: _Waiter) -> None:
        if waiter.granted:
            self.release()  # it was handed a slot just as it was cancelled: pass it on
            return
        queue = self._queues[key]
        queue.remove(waiter)
        if not queue:
            del self._queues[key]

"""Following the event streams with a Redis consumer group: each entry is handled, then acked;
entries another consumer of the group took and never acked (it died) are claimed and handled
again once they have been idle `claim_idle` seconds (XAUTOCLAIM).

Delivery is at least once: a handler sees repeats (re-appends, re-deliveries) and dedupes by
(room, seq) (`Deduper`, or an idempotent write keyed by them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence

import coredis
import coredis.exceptions
import trio

from server.events.stream import StreamEvent, decode_entry, stream_keys

Handler = Callable[[Sequence[StreamEvent]], Awaitable[None]]


class EventConsumer:
    """One consumer `consumer` of group `group` over every partition stream of `namespace`."""

    def __init__(
        self,
        client: coredis.Redis[bytes],
        *,
        namespace: str,
        partitions: int,
        group: str,
        consumer: str,
        claim_idle: float = 30.0,
        block: float = 1.0,
        count: int = 100,
    ) -> None:
        self._client = client
        self._keys = stream_keys(namespace, partitions)
        self._group = group
        self._consumer = consumer
        self._claim_idle_ms = int(claim_idle * 1000)
        self._claim_every = max(claim_idle / 2, 0.05)
        self._block_ms = max(int(block * 1000), 1)
        self._count = count
        self.handled = 0  # entries handled and acked

    async def create_groups(self) -> None:
        """The group on every partition stream, reading from its start (streams made if new)."""
        for key in self._keys:
            # Made before (by this consumer's last run, or another of its group): fine.
            with contextlib.suppress(coredis.exceptions.StreamDuplicateConsumerGroupError):
                await self._client.xgroup_create(key, self._group, identifier="0", mkstream=True)

    async def run(
        self, handle: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Handle entries until cancelled: claimed ones first, then new ones as they arrive."""
        await self.create_groups()
        task_status.started()
        next_claim = trio.current_time()
        while True:
            if trio.current_time() >= next_claim:
                await self.claim_stale(handle)
                next_claim = trio.current_time() + self._claim_every
            await self.read_new(handle)

    async def read_new(self, handle: Handler) -> None:
        """One XREADGROUP over every partition (blocking up to `block`), handled and acked."""
        reply = await self._client.xreadgroup(
            self._group,
            self._consumer,
            dict.fromkeys(self._keys, ">"),
            count=self._count,
            block=self._block_ms,
        )
        for key, entries in (reply or {}).items():
            stream = key.decode()
            await self._handle(stream, [(e.identifier, e.field_values) for e in entries], handle)

    async def claim_stale(self, handle: Handler) -> None:
        """Take over and handle entries idle past `claim_idle` in the group's pending lists."""
        for key in self._keys:
            start: str | bytes = "0-0"
            while True:
                reply = await self._client.xautoclaim(
                    key, self._group, self._consumer, self._claim_idle_ms, start, count=self._count
                )
                start, entries = reply[0], reply[1]
                live = [(e.identifier, e.field_values) for e in entries if e.field_values]
                await self._handle(key, live, handle)
                if start in (b"0-0", "0-0"):
                    break

    async def _handle(
        self, stream: str, entries: list[tuple[object, object]], handle: Handler
    ) -> None:
        if not entries:
            return
        events = [
            decode_entry(stream, _text(entry_id), fields)  # type: ignore[arg-type]
            for entry_id, fields in entries
        ]
        await handle(events)
        await self._client.xack(stream, self._group, [e.entry_id for e in events])
        self.handled += len(events)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

"""Per-shard acks: a batch over rooms on several shard databases is acked shard by shard.

A sharded store (storage.routing: `append_batch_parts`) commits a batch one transaction per
shard, the shards concurrently, after one catalog step for the whole batch (room ids, users,
message ids). `ShardCommits` hands each part to the writer as its transaction ends: published
and acked at once, while the other shards are still committing, so a slow shard delays only its
own rooms. Each part is durable before it is delivered; a room is on one shard, so its seqs are
still published in order; a part that fails answers only its own senders `unavailable` (they may
resend with the same client_id; the parts that committed answer such a resend as duplicates).

Each shard has its own failure log (one traceback, then counts, as the writer's), so one shard
down does not log every batch again as the others recover it. Readiness: a batch any of whose
shards failed leaves `last_commit_failed_at` after its successes, so `/readyz` says "database
not writable" until a later batch commits on every shard it spans.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import trio

from server.ops.log_throttle import LogThrottle
from server.ops.metrics import LATENCY_BUCKETS, Histogram, Metrics
from storage import Appended, Conflict, NewMessage, NotFound, StorageError

if TYPE_CHECKING:
    from server.persist.writer import PendingSend
    from storage.routing import PartListener


@runtime_checkable
class ShardedAppend(Protocol):
    """A store that commits a batch per shard and reports each part as it ends."""

    async def append_batch_parts(
        self, batch: Sequence[NewMessage], parts: PartListener
    ) -> None: ...


class _Writer(Protocol):
    last_commit_failed_at: float

    def committed(
        self,
        batch: list[PendingSend],
        results: list[Appended],
        started: float,
        failures: LogThrottle | None = None,
    ) -> None: ...

    def failed(
        self, batch: list[PendingSend], exc: StorageError, failures: LogThrottle | None = None
    ) -> None: ...


class ShardCommits:
    """The writer's commits on a sharded store: `commit(batch)` delivers each shard's part as
    that shard commits. `throttle(what)` makes a failure log like the writer's own."""

    def __init__(
        self,
        store: ShardedAppend,
        writer: _Writer,
        metrics: Metrics,
        throttle: Callable[[str], LogThrottle],
    ) -> None:
        self._store = store
        self.writer = writer
        self._metrics = metrics
        self._throttle = throttle
        self._catalog_failures = throttle("message batches")
        self._failures: dict[str, LogThrottle] = {}  # by shard

    async def commit(self, batch: list[PendingSend]) -> None:
        """Commit `batch`, publishing and acking (or refusing) each shard's part as it ends."""
        parts = _Parts(self, batch, time.perf_counter())
        try:
            await self._store.append_batch_parts([item.message for item in batch], parts)
        except StorageError as exc:  # the catalog step (or an unknown room): no part was told
            unanswered = parts.unanswered()
            if unanswered:
                self.writer.failed(unanswered, exc, self._catalog_failures)
            return
        self._catalog_failures.recovered()
        if parts.database_failed:  # after this batch's successes: /readyz says so
            self.writer.last_commit_failed_at = trio.current_time()

    def failures(self, shard: str) -> LogThrottle:
        throttle = self._failures.get(shard)
        if throttle is None:
            throttle = self._failures[shard] = self._throttle(f"message batches on {shard}")
        return throttle

    def observe(self, shard: str, seconds: float | None) -> None:
        """A part's transaction on `shard` committed in `seconds`, or failed (None)."""
        metrics = self._metrics
        if seconds is None:
            metrics.shard_commit_failures[shard] = metrics.shard_commit_failures.get(shard, 0) + 1
            return
        hist = metrics.shard_commit_seconds.get(shard)
        if hist is None:
            hist = metrics.shard_commit_seconds[shard] = Histogram(LATENCY_BUCKETS)
        hist.observe(seconds)


class _Parts:
    """One batch's `PartListener`: each part goes to the writer as it ends."""

    def __init__(self, commits: ShardCommits, batch: list[PendingSend], started: float) -> None:
        self._commits = commits
        self._writer = commits.writer
        self._batch = batch
        self._started = started
        self._answered: set[int] = set()
        self.database_failed = False

    def committed(
        self, shard: str, positions: Sequence[int], results: Sequence[Appended], seconds: float
    ) -> None:
        self._commits.observe(shard, seconds)
        self._answered.update(positions)
        part = [self._batch[i] for i in positions]
        self._writer.committed(part, list(results), self._started, self._commits.failures(shard))

    def failed(
        self, shard: str, positions: Sequence[int], error: StorageError, seconds: float
    ) -> None:
        self._commits.observe(shard, None)
        self._answered.update(positions)
        if not isinstance(error, NotFound | Conflict):
            self.database_failed = True
        part = [self._batch[i] for i in positions]
        self._writer.failed(part, error, self._commits.failures(shard))

    def unanswered(self) -> list[PendingSend]:
        """The sends no part answered (all of them when the store raised before any shard)."""
        answered = self._answered
        return [item for i, item in enumerate(self._batch) if i not in answered]

"""The parts of a sharded batch: a batch over rooms on several shard databases commits one
transaction per shard, and `ShardedMessageStore.append_batch_parts` reports each part to a
`PartListener` as its transaction ends, so the writer can publish and ack one shard's messages
while the others are still committing (durable before delivered holds per part)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.protocols import Appended, StorageError


class PartListener(Protocol):
    """Told of each part of a batch as it ends, on the trio thread, once per position in all;
    must not await (it runs inside the store's per-shard nursery). `positions` index the batch
    passed in, rising; `shard` names the database (`host:port/dbname`, no credentials);
    `seconds` is the part's transaction, its thread hand-off included."""

    def committed(
        self, shard: str, positions: Sequence[int], results: Sequence[Appended], seconds: float
    ) -> None:
        """These messages are durable: `results[k]` is `batch[positions[k]]`'s."""

    def failed(
        self, shard: str, positions: Sequence[int], error: StorageError, seconds: float
    ) -> None:
        """These messages were not stored (their transaction rolled back)."""


class GatheredParts:
    """A `PartListener` that gathers a whole batch: `append_batch` over the parts."""

    def __init__(self, size: int) -> None:
        self._results: list[Appended | None] = [None] * size
        self._error: StorageError | None = None

    def committed(
        self, shard: str, positions: Sequence[int], results: Sequence[Appended], seconds: float
    ) -> None:
        for i, appended in zip(positions, results, strict=True):
            self._results[i] = appended

    def failed(
        self, shard: str, positions: Sequence[int], error: StorageError, seconds: float
    ) -> None:
        if self._error is None:
            self._error = error

    def results(self) -> list[Appended]:
        """Every message's result in batch order, or the first part's error."""
        if self._error is not None:
            raise self._error
        return [r for r in self._results if r is not None]

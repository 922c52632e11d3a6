"""Read replicas: history and resume reads go to a replica that has what the reader needs.

`ReplicaRouter` is a `MessageStore`: writes and `last_seq` go to the primary; `history` and
`messages_after` go to a usable replica (see `storage.routing._health`) whose room `last_seq`
covers the read, else to the primary. No LSN bookkeeping: seqs are gap-free and a room's
messages commit with its `last_seq`, so a replica whose room `last_seq` is at least S holds every
message of the room up to S. What a read needs:

- `history(room, before_seq=B)`: every seq below B, so `last_seq >= B - 1` is enough, and the
  primary is not asked.
- `messages_after(room, A, limit)`: seqs A+1 .. A+limit, so `last_seq >= A + limit` is enough;
  a shorter (tail) page needs the primary's `last_seq`.
- `history(room, None)`, the newest page: the primary's `last_seq`.

The replica answers with its room `last_seq` and the page in one round trip. When the primary
must be asked, its `last_seq` is read on every such read (one indexed point read; for the newest
page at the same time as the replica's read): a cached watermark would miss what other hosts
committed, while a value read after the request began covers every write the reader could have
seen, its own included (read-your-writes). If the replica is behind, the page is read again,
from the primary.

One replica (the next usable one, round robin) is tried per read; a failure or timeout marks it
down and the read is answered by the primary. `run()` probes every replica's lag in the
background; a lagging or down replica is used again once a probe finds it within the bound.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from protocol import Message, RoomEntry
from storage.protocols import Appended, MessageStore, NewMessage, NotFound, StorageError
from storage.routing._health import ProbePolicy, ReplicaHealth, ReplicaReads, describe

T = TypeVar("T")

# Why a read went to the primary: the labels of `hibiki_db_primary_reads_total`.
FALLBACK_REASONS = ("no_replica", "behind", "failed")


@dataclass
class RouterCounts:
    """Reads answered by a replica, and by the primary, by reason (FALLBACK_REASONS)."""

    replica_reads: int = 0
    primary_reads: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(FALLBACK_REASONS, 0)
    )


class ReplicaRouter:
    """A `MessageStore` over a primary and its read replicas; see the module docstring."""

    def __init__(
        self,
        primary: MessageStore,
        replicas: Sequence[tuple[str, ReplicaReads]],
        policy: ProbePolicy | None = None,
    ) -> None:
        policy = ProbePolicy() if policy is None else policy
        self.primary = primary
        self.policy = policy
        self.replicas = [ReplicaHealth(name, reads, policy) for name, reads in replicas]
        self.counts = RouterCounts()
        self._turn = itertools.count()

    async def open(self) -> None:
        """Open every replica's connections (in the background: none is waited for)."""
        for replica in self.replicas:
            await replica.reads.open()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for replica in self.replicas:
                await replica.reads.aclose()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Probe every replica in the background (forever; cancel to stop). Ready at once:
        until a replica's first probe succeeds, reads go to the primary."""
        async with trio.open_nursery() as nursery:
            for replica in self.replicas:
                nursery.start_soon(replica.run)
            task_status.started()

    def status(self) -> list[dict[str, object]]:
        """Each replica's state and lag, for readiness JSON (a replica never fails readiness)."""
        return [replica.status() for replica in self.replicas]

    # MessageStore --------------------------------------------------------------------------
    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        return await self.primary.append_batch(batch)

    async def last_seq(self, room: str) -> int:
        return await self.primary.last_seq(room)

    async def last_seqs(self, rooms: Collection[str]) -> dict[str, int]:
        """From the primary, like `last_seq`: the tail check asks what has been committed."""
        return await self.primary.last_seqs(rooms)

    async def unread_count(self, room: str, read_seq: int, last_seq: int, user_id: int) -> int:
        """From the primary: counted against a cursor and last seq read from it."""
        return await self.primary.unread_count(room, read_seq, last_seq, user_id)

    async def search(
        self, rooms: Collection[str], words: Sequence[str], before_id: int, limit: int
    ) -> tuple[list[Message], bool]:
        """From the primary: a replica's per-room watermark says nothing of a search over many
        rooms, and a user who just sent or edited a message expects search to know it."""
        return await self.primary.search(rooms, words, before_id, limit)

    async def index_search(self) -> int:
        return await self.primary.index_search()

    async def history(
        self, room: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        async def on_replica(reads: ReplicaReads) -> tuple[int, tuple[list[Message], bool]]:
            return await reads.history_and_last_seq(room, before_seq, limit)

        async def on_primary() -> tuple[list[Message], bool]:
            return await self.primary.history(room, before_seq, limit)

        enough = None if before_seq is None else before_seq - 1
        return await self._route(room, enough, on_replica, on_primary)

    async def message(self, room: str, message_id: int) -> Message | None:
        """From the primary: an edit or delete is checked against what is committed."""
        return await self.primary.message(room, message_id)

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[RoomEntry]:
        async def on_replica(reads: ReplicaReads) -> tuple[int, list[RoomEntry]]:
            return await reads.messages_after_and_last_seq(room, after_seq, limit)

        async def on_primary() -> list[RoomEntry]:
            return await self.primary.messages_after(room, after_seq, limit)

        return await self._route(room, after_seq + limit, on_replica, on_primary)

    # Routing -------------------------------------------------------------------------------
    async def _route(
        self,
        room: str,
        enough: int | None,
        on_replica: Callable[[ReplicaReads], Awaitable[tuple[int, T]]],
        on_primary: Callable[[], Awaitable[T]],
    ) -> T:
        """The replica's answer if its room last_seq reaches `enough` or the primary's
        last_seq (asked at the same time when `enough` is None), else the primary's."""
        replica = self._pick()
        if replica is None:
            return await self._primary(on_primary, "no_replica")
        primary_last = _PrimaryLastSeq(self.primary, room)
        async with trio.open_nursery() as nursery:
            if enough is None:  # the newest page: the primary's last_seq is needed anyway
                nursery.start_soon(primary_last.fetch)
            answer = await self._ask(replica, on_replica)
        if isinstance(answer, str):
            return await self._primary(on_primary, answer)
        have, result = answer
        if (enough is None or have < enough) and have < await primary_last.value():
            return await self._primary(on_primary, "behind")
        replica.reads_served += 1
        self.counts.replica_reads += 1
        return result

    async def _ask(
        self, replica: ReplicaHealth, on_replica: Callable[[ReplicaReads], Awaitable[tuple[int, T]]]
    ) -> tuple[int, T] | str:
        """(the replica's last_seq, its answer), or why the primary must answer: "behind" if
        the room is not there (not replicated yet, or no such room: the primary says which),
        "failed" if the read failed or timed out (the replica is then skipped)."""
        try:
            with trio.fail_after(self.policy.timeout):
                return await on_replica(replica.reads)
        except NotFound:
            return "behind"
        except (StorageError, trio.TooSlowError) as exc:
            replica.read_failed(describe(exc))
            return "failed"

    async def _primary(self, on_primary: Callable[[], Awaitable[T]], reason: str) -> T:
        self.counts.primary_reads[reason] += 1
        return await on_primary()

    def _pick(self) -> ReplicaHealth | None:
        """The next usable replica in turn, or None."""
        n = len(self.replicas)
        start = next(self._turn)
        for i in range(n):
            replica = self.replicas[(start + i) % n]
            if replica.usable:
                return replica
        return None


class _PrimaryLastSeq:
    """The primary's last_seq of a room, fetched at most once: in the background beside the
    replica's read, or when first needed. Its error (`NotFound`: no such room) is raised by
    `value()`, so a nursery never wraps it."""

    def __init__(self, primary: MessageStore, room: str) -> None:
        self._primary = primary
        self._room = room
        self._started = False
        self._done = trio.Event()
        self._value = 0
        self._error: StorageError | None = None

    async def fetch(self) -> None:
        self._started = True
        try:
            self._value = await self._primary.last_seq(self._room)
        except StorageError as exc:
            self._error = exc
        finally:
            self._done.set()

    async def value(self) -> int:
        if not self._started:
            await self.fetch()
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value

"""`ShardedMessageStore`: each room's messages and seq counter on its shard database.

The catalog (accounts, tokens, rooms, memberships, the directory and the message-id sequence)
stays on the primary. An append asks the catalog once per batch (room ids, which user ids
exist, one id per message: ids rise across shards in commit order), then commits each shard's
part of the batch in its own transaction, the shards concurrently. Nothing of a batch is
written if a room or user is unknown; if one shard fails after another committed, the committed
part stays (a resend with the same client_id returns it) and the error is raised.
`append_batch_parts` tells a listener of each shard's part as its transaction ends instead
(storage.routing.sharded_parts): the writer acks each shard's senders as that shard commits.

When a shard answers `NotOwned` (a move switched the unit away), the store re-reads the
directory and retries there; while no database owns the unit yet (the few milliseconds between
the old owner's fence and the directory switch) it retries with a short backoff, up to
`switch_timeout`, so senders wait and are not refused.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import trio

from protocol import Message, RoomEntry
from storage.postgres._connection import Settings, postgres_errors
from storage.postgres._threads import PoolThreads
from storage.protocols import Appended, NewMessage, NotFound, Room, StorageError
from storage.routing import _shard_jobs as jobs
from storage.routing import directory as catalog
from storage.routing._shard_schema import (
    CATALOG_LOCK_KEY,
    CATALOG_MIGRATIONS,
    CATALOG_VERSION_TABLE,
    SHARD_LOCK_KEY,
    SHARD_MIGRATIONS,
    SHARD_VERSION_TABLE,
    apply,
)
from storage.routing.shard_events import ShardOutbox, ShardOutboxes
from storage.routing.sharded_parts import GatheredParts, PartListener
from storage.routing.shards import logical_shard
from storage.search import newest_first

T = TypeVar("T")
_MAX_SEQ = 2**63 - 1
_FIRST_DELAY = 0.005  # seconds: the first wait for a switch, doubled up to _MAX_DELAY
_MAX_DELAY = 0.2


@dataclass(slots=True)
class _SwitchWait:
    """One call's wait for a directory switch: its deadline, and the next backoff delay."""

    deadline: float
    delay: float = _FIRST_DELAY


class ShardedMessageStore:
    """`MessageStore` over the shard databases at `shard_urls`, with its catalog at
    `primary_url` (the database PostgresStore serves). Open after that store, close before."""

    def __init__(
        self,
        primary_url: str,
        shard_urls: Sequence[str],
        *,
        pool_size: int = 4,
        statement_timeout: float = 10.0,
        synchronous_commit: str = "on",
        switch_timeout: float = 10.0,
    ) -> None:
        if not shard_urls:
            raise StorageError("no shard databases given")
        settings = [
            Settings(u, pool_size, statement_timeout, synchronous_commit) for u in shard_urls
        ]
        self._shards = {s.target: PoolThreads(s) for s in settings}
        if len(self._shards) != len(settings):
            raise StorageError("a shard database is given twice")
        self._order = [s.target for s in settings]
        self._catalog = PoolThreads(Settings(primary_url, 2, statement_timeout, synchronous_commit))
        self._directory = catalog.Directory(0, {})
        self._rooms: dict[str, tuple[int, int]] = {}  # name -> (id, logical): never change
        self._switch_timeout = switch_timeout
        self.refreshes = 0  # directory re-reads after a NotOwned (for tests and metrics)
        self._closed = False

    @property
    def directory(self) -> catalog.Directory:
        return self._directory

    def event_outboxes(self) -> ShardOutboxes:
        """Each shard database's event outbox (storage/routing/shard_events.py), for one
        appender per shard database; usable once the store is open."""
        outboxes = {target: ShardOutbox(threads) for target, threads in self._shards.items()}
        return ShardOutboxes(outboxes, lambda room: self._directory.place(room).target)

    async def open(self) -> None:
        opened: list[PoolThreads] = []
        try:
            for threads in [self._catalog, *self._shards.values()]:
                await threads.open()
                opened.append(threads)
            await self._catalog.write(
                apply, CATALOG_VERSION_TABLE, CATALOG_MIGRATIONS, CATALOG_LOCK_KEY
            )
            for threads in self._shards.values():
                await threads.write(apply, SHARD_VERSION_TABLE, SHARD_MIGRATIONS, SHARD_LOCK_KEY)
            await self._create_directory()
            await self._refresh()
        except BaseException:
            for threads in opened:
                await threads.aclose()
            raise

    async def _create_directory(self) -> None:
        """On first open only: spread the logical shards and give each database its units."""
        await trio.to_thread.run_sync(self._create_directory_job)

    def _create_directory_job(self) -> None:
        settings = self._catalog.settings
        with postgres_errors(settings.url), settings.connect() as conn, conn.transaction():
            catalog.lock_directory(conn)
            assignment = catalog.create_directory(conn, self._order)
            if assignment is None:
                return
            for target, threads in self._shards.items():
                units = [catalog.unit_of_logical(s) for s, t in assignment.items() if t == target]
                with threads.settings.connect() as shard:
                    jobs.own(shard, units)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for threads in [*self._shards.values(), self._catalog]:
            await threads.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the sharded store is closed")

    async def _refresh(self) -> None:
        directory = await self._catalog.read(catalog.read_directory)
        unknown = directory.targets() - set(self._shards)
        if unknown:
            raise StorageError(
                f"the shard directory names {', '.join(sorted(unknown))}, not in [storage] shards"
            )
        self._directory = directory

    async def _routed(self, room: str, call: Callable[[PoolThreads, str, str], Awaitable[T]]) -> T:
        """`call(shard, target, unit)` on the room's shard, following moves."""
        self._check_open()
        wait = _SwitchWait(trio.current_time() + self._switch_timeout)
        while True:
            place = self._directory.place(room)
            try:
                return await call(self._shards[place.target], place.target, place.unit)
            except jobs.NotOwned as exc:
                await self._after_not_owned(exc, wait)

    async def _after_not_owned(self, exc: jobs.NotOwned, wait: _SwitchWait) -> None:
        """Re-read the directory; if it has not switched yet, back off (5 ms doubling to
        200 ms) until the deadline, then fail with `StorageError` (never a trio timeout: the
        writer answers a StorageError with `unavailable`)."""
        before = self._directory.version
        self.refreshes += 1
        await self._refresh()
        if self._directory.version != before:
            wait.delay = _FIRST_DELAY
            return
        if trio.current_time() + wait.delay > wait.deadline:
            raise StorageError(
                f"{exc}, and the directory names no new home after {self._switch_timeout:g} s:"
                " is a `hibiki shards move` unfinished? Run it again"
            ) from exc
        await trio.sleep(wait.delay)
        wait.delay = min(wait.delay * 2, _MAX_DELAY)

    # MessageStore ---------------------------------------------------------------------------
    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        """Every part committed, in batch order; else the first shard's error, once all parts
        ended (the parts that committed stay: a resend with the same client_id returns them)."""
        parts = GatheredParts(len(batch))
        await self.append_batch_parts(batch, parts)
        return parts.results()

    async def append_batch_parts(self, batch: Sequence[NewMessage], parts: PartListener) -> None:
        """Commit `batch` one transaction per shard, the shards concurrently, telling `parts`
        of each as it ends (committed, or failed with a `StorageError`) while the others go on.

        Raises (`NotFound`, `StorageError`) before any shard is written if the catalog step
        fails, or a room or user is unknown: then `parts` is told nothing."""
        self._check_open()
        if not batch:
            await trio.lowlevel.checkpoint()
            return
        ids = await self._catalog_step(batch)
        by_room: dict[str, list[int]] = defaultdict(list)
        for i, m in enumerate(batch):
            by_room[m.room].append(i)
        async with trio.open_nursery() as nursery:
            for group in self._groups(by_room):
                nursery.start_soon(self._append_part, group, batch, ids, parts)

    async def _catalog_step(self, batch: Sequence[NewMessage]) -> Sequence[int]:
        """One catalog transaction per batch: the rooms' ids, which users exist, and one
        message id per message (rising in batch order)."""
        names = sorted({m.room for m in batch})
        found = await self._catalog.write(
            catalog.batch_catalog, names, sorted({m.user_id for m in batch}), len(batch)
        )
        for name in names:
            if name not in found.rooms:
                raise NotFound(f"no room named {name!r}")
            self._rooms[name] = (found.rooms[name], logical_shard(name))
        if any(m.user_id not in found.users for m in batch):
            raise StorageError("unknown user id in a batch")
        return found.ids

    def _groups(self, by_room: dict[str, list[int]]) -> list[dict[str, list[int]]]:
        """The batch's rooms grouped by the shard the directory places them on now."""
        groups: dict[str, dict[str, list[int]]] = defaultdict(dict)
        for room, positions in by_room.items():
            groups[self._directory.place(room).target][room] = positions
        return list(groups.values())

    async def _append_part(
        self,
        rooms: dict[str, list[int]],
        batch: Sequence[NewMessage],
        ids: Sequence[int],
        parts: PartListener,
    ) -> None:
        """Commit these rooms' messages on their shard, following a move if one turns them
        away; each transaction's outcome goes to `parts` as it ends."""
        wait = _SwitchWait(trio.current_time() + self._switch_timeout)
        pending = dict(rooms)
        while pending:
            group = self._groups(pending)[0]
            positions = sorted(i for p in group.values() for i in p)
            place = self._directory.place(next(iter(group)))
            units = sorted({self._directory.place(room).unit for room in group})
            started = time.perf_counter()
            try:
                done = await self._shards[place.target].write(
                    jobs.append,
                    place.target,
                    units,
                    {room: self._rooms[room] for room in group},
                    [batch[i] for i in positions],
                    [ids[i] for i in positions],
                )
            except jobs.NotOwned as exc:
                try:
                    await self._after_not_owned(exc, wait)
                except StorageError as error:  # no new home in time: all that is left fails
                    left = sorted(i for p in pending.values() for i in p)
                    parts.failed(place.target, left, error, time.perf_counter() - started)
                    return
                continue
            except StorageError as error:
                parts.failed(place.target, positions, error, time.perf_counter() - started)
            else:
                parts.committed(place.target, positions, done, time.perf_counter() - started)
            for room in group:
                del pending[room]

    async def history(
        self, room: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        before = _MAX_SEQ if before_seq is None else before_seq
        return await self._routed(
            room, lambda s, t, u: s.read(jobs.history, t, u, room, before, limit)
        )

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[RoomEntry]:
        return await self._routed(
            room, lambda s, t, u: s.read(jobs.messages_after, t, u, room, after_seq, limit)
        )

    async def message(self, room: str, message_id: int) -> Message | None:
        return await self._routed(
            room, lambda s, t, u: s.read(jobs.message, t, u, room, message_id)
        )

    async def unread_count(self, room: str, read_seq: int, last_seq: int, user_id: int) -> int:
        count = await self._routed(
            room, lambda s, t, u: s.read(jobs.unread_count, t, u, room, read_seq, last_seq, user_id)
        )
        return count

    async def last_seq(self, room: str) -> int:
        last = await self._routed(room, lambda s, t, u: s.read(jobs.last_seq, t, u, room))
        if last is not None:
            return last
        if room not in self._rooms:  # no message yet: is it a room at all?
            found = await self._catalog.read(catalog.batch_catalog, [room], [], 0)
            if room not in found.rooms:
                raise NotFound(f"no room named {room!r}")
        return 0

    async def last_seqs(self, rooms: Collection[str]) -> dict[str, int]:
        """One catalog read (which rooms exist), then one fenced read per shard, concurrently."""
        self._check_open()
        if not rooms:
            await trio.lowlevel.checkpoint()
            return {}
        found = await self._catalog.read(catalog.batch_catalog, sorted(set(rooms)), [], 0)
        out = dict.fromkeys(found.rooms, 0)  # a room with no message yet has no row on a shard
        try:
            async with trio.open_nursery() as nursery:
                for group in self._groups({name: [] for name in found.rooms}):
                    nursery.start_soon(self._last_seqs_group, list(group), out)
        except BaseExceptionGroup as group:
            raise _unwrapped(group) from None
        return out

    async def search(
        self, rooms: Collection[str], words: Sequence[str], before_id: int, limit: int
    ) -> tuple[list[Message], bool]:
        """Each shard holding some of `rooms` searched concurrently for `limit` + 1, the pages
        merged by id (storage.search.newest_first): as correct a keyset as one database's."""
        self._check_open()
        pages: list[list[Message]] = []
        if rooms and words:
            try:
                async with trio.open_nursery() as nursery:
                    for group in self._groups({name: [] for name in rooms}):
                        asked = (list(words), before_id, limit + 1)
                        nursery.start_soon(self._search_group, sorted(group), asked, pages)
            except BaseExceptionGroup as group:
                raise _unwrapped(group) from None
        return newest_first(pages, limit)

    async def index_search(self) -> int:
        await trio.lowlevel.checkpoint()
        return 0  # each shard's GIN index is part of its commits

    async def _search_group(
        self, names: list[str], asked: tuple[list[str], int, int], pages: list[list[Message]]
    ) -> None:
        async def read(shard: PoolThreads, target: str, units: list[str], group: list[str]) -> None:
            found, _ = await shard.read(jobs.search, target, units, group, *asked)
            pages.append(found)

        await self._read_by_shard(names, read)

    async def _last_seqs_group(self, names: list[str], out: dict[str, int]) -> None:
        async def read(shard: PoolThreads, target: str, units: list[str], group: list[str]) -> None:
            out.update(await shard.read(jobs.last_seqs, target, units, group))

        await self._read_by_shard(names, read)

    async def _read_by_shard(
        self,
        names: list[str],
        read: Callable[[PoolThreads, str, list[str], list[str]], Awaitable[None]],
    ) -> None:
        """`read(shard, target, units, group)` of `names`, one group of rooms per shard; a group
        whose shard no longer holds one of them (moved meanwhile) is grouped again and read
        where they are now, until the switch timeout."""
        wait = _SwitchWait(trio.current_time() + self._switch_timeout)
        pending = set(names)
        while pending:
            group = sorted(self._groups({name: [] for name in pending})[0])
            target = self._directory.place(group[0]).target
            units = sorted({self._directory.place(room).unit for room in group})
            try:
                await read(self._shards[target], target, units, group)
            except jobs.NotOwned as exc:
                await self._after_not_owned(exc, wait)
                continue
            pending -= set(group)

    async def with_last_seqs(self, rooms: list[Room]) -> list[Room]:
        """`rooms` (catalog rows, whose own last_seq is unused) with their shards' counters."""
        seqs = await self.last_seqs([room.name for room in rooms])
        return [replace(r, last_seq=seqs.get(r.name, 0)) for r in rooms]


def _unwrapped(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """A per-shard nursery's failure as the store's own error: its first `StorageError` when
    every failure is one (callers such as the writer catch `StorageError`), else the group."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if leaves and all(isinstance(exc, StorageError) for exc in leaves):
        return leaves[0]
    return group

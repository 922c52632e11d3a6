"""The event-stream sink: appends each committed message to its room's partition stream, at
least once across crashes.

The writer hands every committed batch to `committed` (never awaits); a task of its own appends
them with one pipelined round of `XADD ... MAXLEN ~ n` and then advances, in the database, each
partition's cursor (the id of the last message appended to it). The store, not this process's
memory, is what must reach the stream: on start, after any failed round (Redis away, too slow)
and when its buffer overflows, the appender forgets what it holds and re-reads the store from
the lowest cursor (`EventOutbox.messages_since_id`), appending what each partition's cursor has
not passed. A message committed but not appended when the process dies is appended after it
restarts; some may be appended twice, so consumers dedupe by (room, seq) (docs/events.md).

One appender per database: with several processes writing one database, their cursors would
pass each other's unappended messages (docs/events.md, "Limits"). Ids rise in commit order with
one writer, so "id above the cursor" is exactly "not yet appended"; a room's events are
appended in seq order.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Sequence

import coredis
import coredis.exceptions
import trio

from protocol import Message
from server.events._connection import StreamConnection
from server.events.stream import entry_fields, partition_of, stream_keys
from server.ops.log_throttle import LogThrottle
from server.redis.resp import RedisReplyError, command
from storage import EventOutbox, StorageError

_log = logging.getLogger(__name__)

READ_BATCH = 1000  # messages per store read while catching up, and per round of XADDs
RETRY_FIRST = 0.05  # seconds before retrying a failed round; doubled up to RETRY_MAX
RETRY_MAX = 2.0
LAG_INTERVAL = 5.0  # seconds between reads of the consumer groups' lag
_FAILURES = (
    coredis.exceptions.RedisError,
    RedisReplyError,
    OSError,
    EOFError,
    trio.BrokenResourceError,
    trio.TooSlowError,
    StorageError,
)


class EventAppender:
    """`CommitSink` to Redis Streams; `run` appends until cancelled (see the module docstring).

    `buffer_limit` bounds what waits in memory: past it the appender drops it and catches up
    from the store instead, so a long Redis outage costs no memory and loses nothing."""

    def __init__(
        self,
        url: str,
        outbox: EventOutbox,
        *,
        namespace: str,
        partitions: int,
        maxlen: int,
        append_timeout: float,
        buffer_limit: int = 100_000,
    ) -> None:
        self.client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url, decode_responses=False, connect_timeout=append_timeout
        )  # for the lag figures; appends go through `_redis`
        self._redis = StreamConnection(url)
        self._outbox = outbox
        self._partitions = partitions
        self._keys = stream_keys(namespace, partitions)
        self._maxlen = b"%d" % maxlen
        self._timeout = append_timeout
        self._buffer_limit = buffer_limit
        self._pending: deque[Message] = deque()
        self._wake = trio.Event()
        self._behind = True  # catch up from the store first (at start: what a crash left)
        self._cursors: dict[int, int] = {}
        self._behind_by = 0  # catching up: messages read from the store, not yet appended
        self._failures = LogThrottle(_log, "event appends")
        # Metrics (read at scrape time).
        self.appended = 0  # entries XADDed, repeats included
        self.committed_seen = 0  # messages handed to `committed`
        self.recovered = 0  # messages appended from the store rather than from memory
        self.consumer_lag: dict[str, int] = {}  # consumer group -> entries not yet delivered

    def committed(self, messages: Sequence[Message]) -> None:
        """The writer's after-commit call: `messages` were just committed, in commit order."""
        self.committed_seen += len(messages)
        if len(self._pending) + len(messages) > self._buffer_limit:
            self._pending.clear()  # the store has them: catch up from there
            self._behind = True
        else:
            self._pending.extend(messages)
        self._wake.set()

    @property
    def outbox_depth(self) -> int:
        """Messages committed and not yet appended, as far as this process knows: those waiting
        in memory, or (catching up) since the lowest cursor, counted as they are read."""
        return len(self._pending) + self._behind_by

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.client:
            try:
                await self._load_cursors()
                task_status.started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_lag)
                    await self._append_forever()
            finally:
                await self._redis.aclose()

    async def _load_cursors(self) -> None:
        """The cursors from the database; a first start begins at the newest message (the stream
        carries what is committed once it is enabled, not the history before)."""
        cursors = await self._outbox.event_cursors()
        if not cursors:
            newest = await self._outbox.last_message_id()
            cursors = dict.fromkeys(range(self._partitions), newest)
            await self._outbox.advance_event_cursors(cursors)
        floor = min(cursors.values())  # a partition without a row yet misses nothing from here
        self._cursors = {p: cursors.get(p, floor) for p in range(self._partitions)}

    async def _append_forever(self) -> None:
        pause = RETRY_FIRST
        while True:
            if self._behind:
                ok = await self._catch_up()
            else:
                await self._wake.wait()
                self._wake = trio.Event()
                ok = await self._append_pending()
            if ok:
                pause = RETRY_FIRST
                self._failures.recovered()
            else:
                self._behind = True
                await trio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX)

    async def _append_pending(self) -> bool:
        while self._pending and not self._behind:
            take = min(len(self._pending), READ_BATCH)
            batch = [self._pending.popleft() for _ in range(take)]
            if not await self._append(batch):
                return False
        return True

    async def _catch_up(self) -> bool:
        """Append what the store holds above each partition's cursor, oldest first."""
        self._behind = False
        self._pending.clear()  # what it held is in the store; newer commits land here again
        scan = min(self._cursors.values())
        while True:
            try:
                rows = await self._outbox.messages_since_id(scan, READ_BATCH)
            except StorageError as exc:
                self._failed(exc)
                return False
            self._behind_by = len(rows)
            if rows and not await self._append(rows, recovering=True):
                return False
            self._behind_by = 0
            if len(rows) < READ_BATCH:
                return True
            scan = rows[-1].id

    async def _append(self, messages: Sequence[Message], *, recovering: bool = False) -> bool:
        """One round: XADD each message its partition's cursor has not passed, then advance
        the cursors in the database. False (logged) if either fails."""
        todo = [(partition_of(m.room, self._partitions), m) for m in messages]
        todo = [(p, m) for p, m in todo if m.id > self._cursors[p]]
        if not todo:
            return True
        advanced: dict[int, int] = {}
        try:
            with trio.fail_after(self._timeout):
                await self._xadd(todo)
            for p, m in todo:
                advanced[p] = m.id
            await self._outbox.advance_event_cursors(advanced)
        except _FAILURES as exc:
            self._failed(exc)
            return False
        self._cursors.update(advanced)
        self.appended += len(todo)
        if recovering:
            self.recovered += len(todo)
        return True

    async def _xadd(self, todo: list[tuple[int, Message]]) -> None:
        keys, maxlen = self._keys, self._maxlen
        await self._redis.run_all(
            [
                command(b"XADD", keys[p], b"MAXLEN", b"~", maxlen, b"*", *_flat(entry_fields(m)))
                for p, m in todo
            ]
        )

    def _failed(self, exc: BaseException) -> None:
        kind = f"{type(exc).__qualname__}: {exc}"
        self._failures.occurred(kind, "event append failed, retrying from the store: %s", kind)

    async def _read_lag(self) -> None:
        """Every LAG_INTERVAL: entries each consumer group has not been delivered yet."""
        while True:
            with contextlib.suppress(*_FAILURES):  # Redis away: the append loop says so
                self.consumer_lag = await self._lag()
            await trio.sleep(LAG_INTERVAL)

    async def _lag(self) -> dict[str, int]:
        lag: dict[str, int] = {}
        for key in self._keys:
            try:
                with trio.fail_after(self._timeout):
                    groups = await self.client.xinfo_groups(key)
            except coredis.exceptions.ResponseError:
                continue  # no stream there yet, so no group
            for group in groups:
                name, value = group[b"name"], group.get(b"lag")
                if isinstance(name, bytes) and isinstance(value, int):
                    lag[name.decode()] = lag.get(name.decode(), 0) + value
        return lag


def _flat(fields: dict[bytes, bytes]) -> list[bytes]:
    return [part for pair in fields.items() for part in pair]

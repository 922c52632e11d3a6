"""The event-stream sink: appends each committed message to its room's partition stream, at
least once across crashes, from the one process per database elected to append.

Election: every process with `[events]` on runs an appender; each tries to take the database's
appender lease (`EventOutbox.appender_lease`: a PostgreSQL advisory lock on a session of its
own, or an exclusive flock beside a SQLite file), and the one that holds it leads. A follower
appends nothing and tries again every ELECTION_INTERVAL seconds; the leader checks its lease as
often and stops appending the moment it is lost (a dead leader's lease is released by the
database or the kernel, so a follower takes over within about ELECTION_INTERVAL).

The leader appends what the store holds, never what it remembers: other processes commit too.
A round reads the messages above what it has read (`EventOutbox.messages_for_stream`), XADDs
them in one pipelined write (`XADD ... MAXLEN ~ n`), and moves the cursor it keeps in the
database (`events_cursor`: per partition, an id below which everything is appended). Its own
commits wake it at once (`committed`); other processes' it sees within POLL_INTERVAL. Where ids
do not commit in id order (several PostgreSQL writers), `StreamWatermark` keeps the cursor
below any id that may still commit, and such a message is appended when it appears. After a
failed round (Redis away, too slow, the database away) it reads again from where it was; a new
leader starts from the stored cursor. So a message committed but not appended when a process
dies is appended later, by it or another; some may be appended twice (consumers dedupe by
(room, seq), docs/events.md), and a room's events are appended in seq order.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import coredis
import coredis.exceptions
import trio

from protocol import Message
from server.events._connection import StreamConnection
from server.events._watermark import StreamWatermark
from server.events.stream import entry_fields, partition_of, stream_keys
from server.ops.log_throttle import LogThrottle
from server.redis.resp import RedisReplyError, command
from storage import EventOutbox, StorageError

_log = logging.getLogger(__name__)

READ_BATCH = 1000  # messages per store read, and per round of XADDs
RETRY_FIRST = 0.05  # seconds before retrying a failed round; doubled up to RETRY_MAX
RETRY_MAX = 2.0
LAG_INTERVAL = 5.0  # seconds between reads of the consumer groups' lag
ELECTION_INTERVAL = 2.0  # seconds between a follower's tries, and between a leader's checks
POLL_INTERVAL = 0.1  # seconds: the leader reads the store at least this often
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
    """`CommitSink` to Redis Streams; `run` elects and appends until cancelled (see the module
    docstring). `leader` says whether this process appends now (the
    `hibiki_events_appender_leader` gauge).

    Memory is bounded by READ_BATCH messages per round and the id gaps it waits on;
    `buffer_limit` is kept for callers of the earlier, buffering appender and unused."""

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
        election_interval: float = ELECTION_INTERVAL,
        poll_interval: float = POLL_INTERVAL,
        read_lag: bool = True,
    ) -> None:
        del buffer_limit
        self._reads_lag = read_lag  # one appender per process reads it (several with shards)
        self.client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url, decode_responses=False, connect_timeout=append_timeout
        )  # for the lag figures; appends go through `_redis`
        self._redis = StreamConnection(url)
        self._outbox = outbox
        self._lease = outbox.appender_lease()
        self._partitions = partitions
        self._keys = stream_keys(namespace, partitions)
        self._maxlen = b"%d" % maxlen
        self._timeout = append_timeout
        self._election_interval = election_interval
        self._poll_interval = poll_interval
        self._wake = trio.Event()
        self._cursors: dict[int, int] = {}  # as stored: partition -> id appended up to
        self._stored = 0  # the lowest stored cursor
        self._unread = 0  # this process's commits since the last read began
        self._behind_by = 0  # read from the store, not appended yet
        self._recovering = True  # catching up: after a start, a new term or a failure
        self._failures = LogThrottle(_log, "event appends")
        # Metrics (read at scrape time).
        self.leader = False
        self.appended = 0  # entries XADDed, repeats included
        self.committed_seen = 0  # messages handed to `committed`
        self.recovered = 0  # entries appended while catching up, not as they were committed
        self.consumer_lag: dict[str, int] = {}  # consumer group -> entries not yet delivered

    def committed(self, messages: Sequence[Message]) -> None:
        """The writer's after-commit call: `messages` were just committed, in commit order.
        The store has them; this only wakes the leader to read them now."""
        self.committed_seen += len(messages)
        self._unread += len(messages)
        self._wake.set()

    @property
    def outbox_depth(self) -> int:
        """Messages committed and not yet appended, as far as this process knows: its own
        commits not read back yet and what the last read holds unappended. 0 on a follower."""
        return self._unread + self._behind_by if self.leader else 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Elect and append until cancelled. Started once the first try for the lease is over
        and, if it won, the cursors are read (or reading them failed: retried then), so that
        one process alone has its cursors before its writer commits anything."""
        started = _Once(task_status.started)
        async with self.client, trio.open_nursery() as nursery:
            try:
                if self._reads_lag:
                    nursery.start_soon(self._read_lag)
                while True:
                    if await self._try_lease():
                        await self._lead(started)
                    started()
                    await trio.sleep(self._election_interval)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._lease.release)
                    await self._redis.aclose()

    async def _try_lease(self) -> bool:
        return await trio.to_thread.run_sync(self._lease.acquire)

    async def _lead(self, started: Callable[[], None]) -> None:
        """One term: append until the lease is lost (then give it up and follow again)."""
        self.leader = True
        self._recovering = True
        _log.info("event appender: leading, this process appends the event stream")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_lease, nursery.cancel_scope)
                await self._append_forever(started)
        finally:
            self.leader = False
            self._behind_by = 0
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._lease.release)

    async def _keep_lease(self, term: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self._election_interval)
            if not await trio.to_thread.run_sync(self._lease.held):
                _log.warning("event appender: lost the lead, following (another may append)")
                term.cancel()
                return

    async def _append_forever(self, started: Callable[[], None]) -> None:
        pause = RETRY_FIRST
        mark: StreamWatermark | None = None
        while True:
            self._wake = trio.Event()  # a commit from here on wakes the next round
            try:
                if mark is None:
                    mark = await self._start_term()
                    started()
                more = await self._round(mark)
            except _FAILURES as exc:
                self._failed(exc)
                started()
                self._recovering = True
                await trio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX)
                continue
            pause = RETRY_FIRST
            self._failures.recovered()
            if not more:
                self._recovering = False
                with trio.move_on_after(self._poll_interval):
                    await self._wake.wait()

    async def _start_term(self) -> StreamWatermark:
        """The cursors from the database; a first start begins at the newest message (the stream
        carries what is committed once it is enabled, not the history before)."""
        cursors = await self._outbox.event_cursors()
        if not cursors:
            newest = await self._outbox.last_message_id()
            cursors = dict.fromkeys(range(self._partitions), newest)
            await self._outbox.advance_event_cursors(cursors)
        floor = min(cursors.values())  # a partition without a row yet misses nothing from here
        self._cursors = {p: cursors.get(p, floor) for p in range(self._partitions)}
        self._stored = floor
        return StreamWatermark(floor)

    async def _round(self, mark: StreamWatermark) -> bool:
        """Read, XADD what no cursor has passed, move the stored cursor: whether more is waiting
        above what this read returned."""
        self._unread = 0
        high = mark.high
        read = await self._outbox.messages_for_stream(mark.gap_ranges(), high, READ_BATCH)
        keys = read.keys()  # ids, or a shard database's own positions (StreamRead)
        todo = [
            (p, m)
            for m, key in zip(read.messages, keys, strict=True)
            if key > self._cursors[p := partition_of(m.room, self._partitions)]
        ]
        self._behind_by = len(todo)
        if todo:
            with trio.fail_after(self._timeout):
                await self._xadd(todo)
            self.appended += len(todo)
            if self._recovering:
                self.recovered += len(todo)
        self._behind_by = 0
        mark.observe(keys, read.horizon)
        if mark.settled > self._stored:
            await self._outbox.advance_event_cursors(
                dict.fromkeys(range(self._partitions), mark.settled)
            )
            self._stored = mark.settled
            self._cursors = {p: max(c, mark.settled) for p, c in self._cursors.items()}
        return sum(1 for key in keys if key > high) >= READ_BATCH

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


class _Once:
    """Calls `fn` the first time it is called, and never again."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn: Callable[[], None] | None = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn()

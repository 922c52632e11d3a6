"""A PostgreSQL streaming replica as the read router sees it: message reads and a lag probe.

The reads are `PostgresStore`'s own jobs (storage.postgres._messages, _rooms), so a page read
from a replica is the page the primary would give. A replica is read-only, so nothing here
migrates or writes; and it may be down when the server starts or at any time after, so the pool
is opened without waiting for a connection and makes them on demand (`min_size=0`): a read or
probe then fails fast with `StorageError`, and the router answers from the primary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import psycopg
import psycopg_pool
import trio

from protocol import Message, RoomEntry
from storage.postgres import _messages as _pg_messages
from storage.postgres import _rooms as _pg_rooms
from storage.postgres._connection import Settings, postgres_errors
from storage.protocols import ReplicaLag

T = TypeVar("T")
Connection = psycopg.Connection[tuple[object, ...]]
Ts = TypeVarTuple("Ts")

_MAX_SEQ = 2**63 - 1
# Replay lag in seconds (0 once everything received is replayed: an idle primary is not lag)
# and WAL bytes received but not replayed. On a server not in recovery both are 0.
_LAG = (
    "SELECT CASE WHEN NOT pg_is_in_recovery()"
    " OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8,"
    " COALESCE(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::int8"
)


class PostgresReplica:
    """`storage.routing.ReplicaReads` on the replica at `url`: `pool_size` connections made on
    demand, `statement_timeout` seconds per query and per wait for a connection."""

    def __init__(self, url: str, *, pool_size: int = 4, statement_timeout: float = 2.0) -> None:
        self.settings = Settings(url, pool_size, statement_timeout)
        self._pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
            url,
            min_size=0,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": max(2, round(statement_timeout))},
            configure=self.settings.configure,
            timeout=statement_timeout,
            open=False,
            name="hibiki-replica",
        )
        self._limiter = trio.CapacityLimiter(pool_size)

    @property
    def target(self) -> str:
        """host:port/database, never the password."""
        return self.settings.target

    async def open(self) -> None:
        await trio.to_thread.run_sync(self._pool.open, False)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._pool.close)

    async def history_and_last_seq(
        self, room: str, before_seq: int | None, limit: int
    ) -> tuple[int, tuple[list[Message], bool]]:
        before = _MAX_SEQ if before_seq is None else before_seq
        return await self._read(_with_last_seq, _pg_messages.history, room, before, limit)

    async def messages_after_and_last_seq(
        self, room: str, after_seq: int, limit: int
    ) -> tuple[int, list[RoomEntry]]:
        return await self._read(_with_last_seq, _pg_messages.messages_after, room, after_seq, limit)

    async def replica_lag(self) -> ReplicaLag:
        return await self._read(_lag, self._pool)

    async def _read(self, fn: Callable[[Connection, *Ts], T], *args: *Ts) -> T:
        """Abandoned on cancellation (a read: nothing to finish); `statement_timeout` ends it."""
        return await trio.to_thread.run_sync(
            self._job, fn, args, limiter=self._limiter, abandon_on_cancel=True
        )

    def _job(self, fn: Callable[[Connection, *Ts], T], args: tuple[*Ts]) -> T:
        with postgres_errors(self.settings.url), self._pool.connection() as conn:
            return fn(conn, *args)


def _with_last_seq(
    conn: Connection,
    page: Callable[[Connection, str, int, int], T],
    room: str,
    seq: int,
    limit: int,
) -> tuple[int, T]:
    """The room's last_seq, then the page on the same connection (its snapshot is no older:
    a replica only moves forward); `NotFound` if the room has not reached the replica."""
    return _pg_rooms.last_seq(conn, room), page(conn, room, seq, limit)


def _lag(conn: Connection, pool: psycopg_pool.ConnectionPool[Connection]) -> ReplicaLag:
    # Idle connections broken by a replica restart are replaced here, by the probe, rather
    # than found by the next reads (each would mark the replica down again).
    pool.check()
    row = conn.execute(_LAG).fetchone()
    assert row is not None
    seconds, lag_bytes = row
    assert isinstance(seconds, float) and isinstance(lag_bytes, int)
    return ReplicaLag(seconds, lag_bytes)

"""Blocking psycopg jobs on worker threads, each with a connection from one pool.

psycopg's async API is asyncio-only, so the store uses its blocking API on trio's worker
threads. A `trio.CapacityLimiter` sized to the pool admits one thread per pooled connection,
so a thread never waits inside the pool while the trio side could wait asynchronously.

Writes are never abandoned on cancellation: the caller waits for the job and gets its result,
and the cancellation arrives at its next checkpoint (so an acknowledged write is whole, and a
caller that sees Cancelled knows its write did not run). Reads are abandoned at once; the
server's `statement_timeout` bounds how long such an orphaned query can still run, and the
thread keeps its limiter token until it ends, so the pool is never oversubscribed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import psycopg_pool
import trio

from storage.postgres._connection import CONNECT_TIMEOUT, Connection, Settings, postgres_errors

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class PoolThreads:
    """Runs `fn(conn, *args)` jobs on worker threads, each job on its own pooled connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
            settings.url,
            min_size=settings.pool_size,
            max_size=settings.pool_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(CONNECT_TIMEOUT))},
            configure=settings.configure,
            timeout=CONNECT_TIMEOUT,
            open=False,
            name="hibiki-postgres",
        )
        self._limiter = trio.CapacityLimiter(settings.pool_size)

    async def open(self) -> None:
        await trio.to_thread.run_sync(self._open_pool)

    def _open_pool(self) -> None:
        with postgres_errors(self.settings.url):
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)

    async def aclose(self) -> None:
        """Wait for the jobs running (a last batch), then close every connection."""
        with trio.CancelScope(shield=True):
            # Every token: no job runs any more. Abandoned reads end by statement_timeout.
            with trio.move_on_after(self.settings.statement_timeout + CONNECT_TIMEOUT):
                for _ in range(int(self._limiter.total_tokens)):
                    await self._limiter.acquire_on_behalf_of(object())
            await trio.to_thread.run_sync(self._pool.close)

    async def write(self, fn: Callable[[Connection, *Ts], T], *args: *Ts) -> T:
        return await trio.to_thread.run_sync(
            self._job, fn, args, limiter=self._limiter, abandon_on_cancel=False
        )

    async def read(self, fn: Callable[[Connection, *Ts], T], *args: *Ts) -> T:
        return await trio.to_thread.run_sync(
            self._job, fn, args, limiter=self._limiter, abandon_on_cancel=True
        )

    def _job(self, fn: Callable[[Connection, *Ts], T], args: tuple[*Ts]) -> T:
        with postgres_errors(self.settings.url), self._pool.connection() as conn:
            return fn(conn, *args)

"""Readiness (`GET /readyz`): should this process be sent new connections right now?

Not ready, with the reason, when
- it is draining for shutdown;
- the database is not writable: the writer's last commit failed, or (while the writer is idle and
  so proves nothing) the periodic write probe failed;
- the writer is not keeping up: its queue is at least 90% full.
"""

from __future__ import annotations

import math
import os
import sqlite3
import urllib.parse
from collections.abc import Callable
from typing import Protocol

import trio

WRITER_BACKLOG_LIMIT = 0.9  # fraction of the writer queue's bound
PROBE_BUSY_TIMEOUT = 2.0  # seconds the probe waits for the write lock before calling it a failure


class _Writer(Protocol):
    last_commit_ok_at: float
    last_commit_failed_at: float
    last_commit_error: str

    def queue_depth(self) -> int: ...


class Readiness:
    def __init__(
        self,
        db_path: str,
        writer: _Writer,
        writer_capacity: int,
        draining: Callable[[], bool],
        *,
        probe_interval: float,
    ) -> None:
        self._db_path = db_path
        self._writer = writer
        self._capacity = writer_capacity
        self._draining = draining
        self._interval = probe_interval
        self.probe_ok_at = -math.inf
        self.probe_failed_at = -math.inf
        self.probe_error = ""

    def reason(self) -> str | None:
        """None when ready, else why not (served as the 503 body's `reason`)."""
        if self._draining():
            return "shutting down"
        writer = self._writer
        last_ok = max(writer.last_commit_ok_at, self.probe_ok_at)
        if writer.last_commit_failed_at > last_ok:
            return f"database not writable: {writer.last_commit_error}"
        if self.probe_failed_at > last_ok:
            return f"database not writable: {self.probe_error}"
        depth = writer.queue_depth()
        if depth >= WRITER_BACKLOG_LIMIT * self._capacity:
            return f"writer not keeping up: {depth} of {self._capacity} queued"
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Probe the database every interval, unless a recent commit already proved it writable."""
        task_status.started()
        while True:
            await trio.sleep(self._interval)
            if trio.current_time() - self._writer.last_commit_ok_at >= self._interval:
                await self.probe()

    async def probe(self) -> None:
        """Try a write now and record the outcome."""
        error = await trio.to_thread.run_sync(probe_write, self._db_path)
        if error is None:
            self.probe_ok_at = trio.current_time()
        else:
            self.probe_failed_at = trio.current_time()
            self.probe_error = error


def probe_write(db_path: str) -> str | None:
    """Commit a write that changes nothing (user_version set to itself); None, or the error.

    A real commit, so it proves what a rolled-back transaction would not: the write lock can be
    taken, and the WAL can grow and be synced (no full disk, no read-only remount).
    """
    # mode=rw: never create a database that is not there.
    uri = "file:" + urllib.parse.quote(os.path.abspath(db_path)) + "?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=PROBE_BUSY_TIMEOUT, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints are the store's business
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Read inside the write transaction, as migrations do, so it cannot race one.
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                conn.execute(f"PRAGMA user_version = {version:d}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"{type(exc).__name__}: {exc}"
    return None

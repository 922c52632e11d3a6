"""Readiness (`GET /readyz`): should this process be sent new connections right now?

Not ready, with the reason, when
- it is draining for shutdown;
- the database is not writable: the writer's last commit failed, or (while the writer is idle and
  so proves nothing) the periodic write probe failed;
- the writer is not keeping up: its queue is at least 90% full.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import trio

from storage import Lifecycle

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
        store: Lifecycle,
        writer: _Writer,
        writer_capacity: int,
        draining: Callable[[], bool],
        *,
        probe_interval: float,
    ) -> None:
        self._store = store
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
        error = await self._store.probe(PROBE_BUSY_TIMEOUT)
        if error is None:
            self.probe_ok_at = trio.current_time()
        else:
            self.probe_failed_at = trio.current_time()
            self.probe_error = error

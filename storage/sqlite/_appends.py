"""Where a batch of messages is committed: on the event loop now (`now`, see `_loop_commit`),
or as a job of the writer thread (`on_thread`), which may wait for a lock and checkpoints when
the WAL is due one.

`now` never awaits, so the caller may commit a lone send in the reader's own turn (the writer's
`append_now`) instead of handing it to the writer task first."""

from __future__ import annotations

import time

import trio

from storage.protocols import Appended, NewMessage, StorageError
from storage.sqlite._connection import sqlite_errors
from storage.sqlite._loop_commit import (
    BusyTimeout,
    CheckpointSchedule,
    LoopCommits,
    append_here,
    append_then_checkpoint,
    append_waiting,
)
from storage.sqlite._messages import WriterCursors
from storage.sqlite._threads import ConnectionThread


class Appends:
    """The SQLite store's message commits, on its writer connection."""

    def __init__(
        self,
        writer: ConnectionThread,
        commits: LoopCommits,
        checkpoints: CheckpointSchedule,
        busy: BusyTimeout,
        cursors: WriterCursors,
    ) -> None:
        self._writer = writer
        self._commits = commits
        self._checkpoints = checkpoints
        self._busy = busy
        self._cursors = cursors

    def now(self, messages: tuple[NewMessage, ...]) -> list[Appended] | None:
        """Commit on the loop if `_loop_commit`'s rules allow it now; None: they do not, or the
        lock is taken (the thread must do it, waiting)."""
        if not (
            self._commits.may_run(messages) and self._writer.idle and not self._checkpoints.due()
        ):
            return None
        started = time.perf_counter()
        with sqlite_errors():
            here = self._writer.run_here(append_here, self._busy, self._cursors, messages)
        if here is not None:
            self._commits.took(time.perf_counter() - started)
            self._checkpoints.committed(len(messages))
        return here

    async def on_thread(self, messages: tuple[NewMessage, ...]) -> list[Appended]:
        """Commit on the writer thread, checkpointing after it when one is due."""
        schedule = self._checkpoints
        self._commits.on_thread += 1
        try:
            with sqlite_errors():
                if not schedule.due():
                    results = await self._writer.run(
                        append_waiting, self._busy, self._cursors, messages
                    )
                    schedule.committed(len(messages))
                    return results
                results, frames = await self._writer.run(
                    append_then_checkpoint, self._busy, self._cursors, messages
                )
                schedule.committed(len(messages))
                schedule.checkpointed(frames)
                self._commits.checkpoints += 1
                return results
        except trio.ClosedResourceError as exc:
            raise StorageError("the store was closed") from exc

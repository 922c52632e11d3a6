"""A small batch committed on the event loop's own thread while the writer thread is idle, and
the WAL checkpoints that this moves off the commit.

At light load every batch is one message, and handing it to the writer thread and back costs
more CPU than the commit: two thread switches, GIL hand-overs and a wake-up socket. Committing it
where the writer task runs removes them (one message at a time to N=10, whole server process:
0.59-0.77 -> 0.45-0.48 ms CPU per message, scripts/bench_fanout_instructions.py --light). The
event loop may wait for one commit's fsync when nothing else is queued; it must never wait for
anything longer, so a commit on the loop

- runs only while the writer thread has no job (it owns the connection otherwise), for a small
  batch from one user while no other user sent in the last `MIXED_WINDOW_S` (else it is load,
  and others' frames would wait out the fsync: the thread commits while the loop goes on);
- never waits for a lock: the busy timeout is 0 for it (and back for the thread's next job:
  `BusyTimeout`), and SQLITE_BUSY (another process of
  `--workers N`, a backup's lock) hands the batch to the thread, which waits as before;
- never checkpoints: the writer connection's autocheckpoint is off, and `CheckpointSchedule` has
  the writer thread checkpoint after a batch once about `CHECKPOINT_FRAMES` were written;
- stops for a while after a slow one (a disk whose fsync stalls): the thread takes every batch.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

from storage.protocols import Appended, NewMessage
from storage.sqlite import _messages
from storage.sqlite._connection import BUSY_TIMEOUT_MS

LOOP_MAX_BATCH = 4
"""Batches up to this many messages may be committed on the loop (the commit's cost is its
fsync, whatever the size; a bigger batch is load, better overlapped on the thread)."""
MIXED_WINDOW_S = 0.05
"""Batches from two users closer than this: several senders, group commit on the thread."""
SLOW_COMMIT_S = 0.050
"""A commit on the loop slower than this held every connection up that long: pause them. Not
lower: this machine's fsync has a tail past 10 ms now and then (a commit on the thread would
have waited as long), and one such tail at start kept a whole 15 s benchmark on the thread."""
PAUSE_S = 30.0
# Checkpoint every ~40 MiB of WAL instead of SQLite's 4 MiB: each batch rewrites the tail pages
# of every busy room's indexes, so rarer checkpoints copy each hot page once, not every few
# batches (measured with autocheckpoint: ~+20% messages/s; 1,000 pages was again ~10% slower
# than 10,000 with the current schema, 40,000 no faster).
CHECKPOINT_FRAMES = 10_000

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
_log = logging.getLogger(__name__)


class BusyTimeout:
    """The writer connection's busy timeout: 0 for commits on the loop, BUSY_TIMEOUT_MS for the
    thread's jobs; set only when it changes (a pragma each way per message cost ~5 µs hot)."""

    def __init__(self) -> None:
        self.waits = True  # what `connect` set

    def no_wait(self, conn: sqlite3.Connection) -> None:
        if self.waits:
            conn.execute("PRAGMA busy_timeout = 0")
            self.waits = False

    def wait(self, conn: sqlite3.Connection) -> None:
        if not self.waits:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            self.waits = True

    def waiting(
        self, fn: Callable[[sqlite3.Connection, *Ts], T]
    ) -> Callable[[sqlite3.Connection, *Ts], T]:
        """`fn` as a writer-thread job: it may wait for a lock."""

        def run(conn: sqlite3.Connection, *args: *Ts) -> T:
            self.wait(conn)
            return fn(conn, *args)

        return run


def append_here(
    conn: sqlite3.Connection,
    busy: BusyTimeout,
    cursors: _messages.WriterCursors,
    batch: tuple[NewMessage, ...],
) -> list[Appended] | None:
    """`append_batch` that never waits for a lock: None if the database is busy (nothing was
    stored: the transaction did not begin or was rolled back), for the thread to retry."""
    busy.no_wait(conn)
    try:
        return _messages.append_batch(conn, cursors, batch)
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorname.startswith("SQLITE_BUSY"):
            return None
        raise


def append_waiting(
    conn: sqlite3.Connection,
    busy: BusyTimeout,
    cursors: _messages.WriterCursors,
    batch: tuple[NewMessage, ...],
) -> list[Appended]:
    """The writer thread's append job: it may wait for the lock. (`_messages.append_batch` is
    looked up per call: the stage trace, server/persist/stage_trace.py, wraps it.)"""
    busy.wait(conn)
    return _messages.append_batch(conn, cursors, batch)


def append_then_checkpoint(
    conn: sqlite3.Connection,
    busy: BusyTimeout,
    cursors: _messages.WriterCursors,
    batch: tuple[NewMessage, ...],
) -> tuple[list[Appended], int]:
    """The writer thread's job when a checkpoint is due: the batch, then a PASSIVE checkpoint
    (it waits for no reader). Returns the results and the WAL's frames before the checkpoint."""
    results = append_waiting(conn, busy, cursors, batch)
    _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return results, max(0, int(frames))


class LoopCommits:
    """Whether the next batch may be committed on the loop, and what the commits did (counted
    for `/metrics`: hibiki_sqlite_commits_total, hibiki_sqlite_loop_commit_pauses_total)."""

    def __init__(self, *, enabled: bool = True, stall: float = SLOW_COMMIT_S) -> None:
        self.enabled = enabled
        self.stall = stall
        self.on_loop = 0
        self.on_thread = 0
        self.pauses = 0
        self.checkpoints = 0
        self._paused_until = -1.0
        self._mixed_until = -1.0
        self._last_user = -1
        self._last_at = -1.0

    def may_run(self, batch: tuple[NewMessage, ...]) -> bool:
        """Told every batch: whether this one may be committed on the loop (one sender, light)."""
        now = time.monotonic()
        user = batch[0].user_id
        alone = len(batch) <= LOOP_MAX_BATCH and all(m.user_id == user for m in batch)
        if not alone or (user != self._last_user and now - self._last_at < MIXED_WINDOW_S):
            self._mixed_until = now + MIXED_WINDOW_S
        self._last_user, self._last_at = user, now
        return self.enabled and alone and now >= self._mixed_until and now >= self._paused_until

    def took(self, seconds: float) -> None:
        """A commit on the loop took `seconds` (wall): a slow one pauses them for PAUSE_S."""
        self.on_loop += 1
        if seconds > self.stall:
            self.pauses += 1
            self._paused_until = time.monotonic() + PAUSE_S
            if self.pauses == 1:  # then counted: a slow disk would otherwise log every 30 s
                _log.info(
                    "a SQLite commit held the event loop %.1f ms (over %.0f ms): the writer "
                    "thread commits every batch for %.0f s (and after each later slow one)",
                    seconds * 1e3,
                    self.stall * 1e3,
                    PAUSE_S,
                )


class CheckpointSchedule:
    """When the WAL has grown by about CHECKPOINT_FRAMES since the last checkpoint.

    SQLite's autocheckpoint counts frames at each commit, which Python cannot see; this counts
    messages and learns the frames each costs from every checkpoint's answer (the WAL's frames
    then, other writers' and the search index's included), so it follows the workload: several
    frames per message at light load, well under one in a flood's batches."""

    def __init__(self, frames_per_message: float = 8.0) -> None:
        self.frames_per_message = frames_per_message
        self.messages = 0  # since the last checkpoint

    def committed(self, messages: int) -> None:
        self.messages += messages

    def due(self) -> bool:
        return self.messages * self.frames_per_message >= CHECKPOINT_FRAMES

    def checkpointed(self, frames: int) -> None:
        """A checkpoint found `frames` in the WAL after `self.messages` messages."""
        if self.messages:
            # Bounded: a reader holding an old snapshot keeps frames un-copied, and the next
            # answer counts them again; retry soon, not after every message.
            self.frames_per_message = min(64.0, max(0.05, frames / self.messages))
        self.messages = 0

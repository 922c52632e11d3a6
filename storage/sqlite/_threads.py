"""One OS thread per SQLite connection, driven from trio without blocking the event loop.

A sqlite3 connection belongs to the thread that created it, and the trio thread must never wait
on the database; so each connection lives on its own thread with a FIFO job queue, and results
travel back through the trio token (the same mechanism `trio.to_thread` uses).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple

import outcome
import trio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# (function, its extra arguments, where to deliver the outcome, the task waiting for it); the
# last two None: the outcome goes in `_answer` and a byte on `_answered` says so.
_Job = tuple[
    Callable[..., Any], tuple[Any, ...], trio.lowlevel.TrioToken | None, trio.lowlevel.Task | None
]


class ConnectionThread:
    """Runs blocking `fn(conn, *args)` jobs in submission order on one thread that owns `conn`.

    `run()` is not abandoned on cancellation: the caller waits for its job to finish and gets its
    result (or exception); the cancellation is delivered at the caller's next checkpoint. So a job
    that started always completes, and a caller that sees Cancelled knows its job never ran.
    """

    def __init__(
        self, name: str, connect: Callable[[], sqlite3.Connection], *, max_pending: int = 1024
    ) -> None:
        self.name = name
        self._connect = connect
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        # Bounds the queue on the trio side: excess callers wait here, asynchronously.
        self._slots = trio.Semaphore(max_pending)
        self._thread: threading.Thread | None = None
        self._closing = False
        self.pending = 0
        """Jobs submitted and not yet answered (trio side only): lets a pool pick the idlest."""
        # The answer to a job submitted while no other was pending wakes its caller through
        # this socket pair, which the caller waits on itself: trio's I/O wait reschedules it
        # directly, where `run_sync_soon` takes a step of trio's entry-queue task first.
        self._answered: socket.socket  # and `_answer_ready`: made by `start`
        self._answer_ready: socket.socket
        self._answer: outcome.Outcome[Any] | None = None
        self._conn: sqlite3.Connection | None = None  # for `run_here`, once open

    async def start(self) -> None:
        """Start the thread and open its connection; raise the connect error if any."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()
        self._answered, self._answer_ready = socket.socketpair()
        self._answered.setblocking(False)
        self._thread = threading.Thread(
            target=self._main, args=(token, task), name=self.name, daemon=False
        )
        self._thread.start()
        opened: outcome.Outcome[None] = await trio.lowlevel.wait_task_rescheduled(_cannot_abort)
        if isinstance(opened, outcome.Error):
            self._closing = True
            await _join(self._thread)
            self._answered.close()
            self._answer_ready.close()
        opened.unwrap()

    async def run(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        """Run `fn(conn, *args)` on the thread; return its result or raise its exception.

        A checkpoint: a cancelled caller leaves before submitting, and waiting for the job is
        the schedule point. With room in the queue nothing else yields (Semaphore.acquire
        would add a scheduling round to every job)."""
        slots = self._slots
        if slots.value > 0:  # then nobody is parked on it: taking a slot now is fair
            await trio.lowlevel.checkpoint_if_cancelled()
            slots.acquire_nowait()
        else:
            await slots.acquire()
        try:
            if self._closing or self._thread is None:
                raise trio.ClosedResourceError(f"{self.name} is not running")
            result: T = await self._submit(fn, args)
            return result
        finally:
            slots.release()

    def run_here(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        """Run `fn(conn, *args)` on the calling (trio) thread, now, without yielding.

        Only while no job is pending (`idle`): the thread is then waiting for one and does not
        touch the connection, and nothing can be submitted before this returns (the trio thread
        is busy here). The connection must allow it (`check_same_thread=False`)."""
        conn = self._conn
        if not self.idle or conn is None:
            raise RuntimeError(f"{self.name} is busy or not running")
        self.pending += 1
        try:
            return fn(conn, *args)
        finally:
            self.pending -= 1

    @property
    def idle(self) -> bool:
        """Running with no job pending: `run_here` may use the connection."""
        return not self.pending and not self._closing and self._thread is not None

    async def aclose(self) -> None:
        """Finish the jobs already queued, close the connection, join the thread. Idempotent."""
        if self._closing or self._thread is None:
            self._closing = True
            return
        self._closing = True
        with trio.CancelScope(shield=True):
            await self._submit(_close_connection, ())
            await _join(self._thread)
        self._answered.close()
        self._answer_ready.close()

    async def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        self.pending += 1
        try:
            if self.pending > 1:  # another caller may be waiting on `_answered`: trio's way
                job = (fn, args, trio.lowlevel.current_trio_token(), trio.lowlevel.current_task())
                self._jobs.put(job)
                return await trio.lowlevel.wait_task_rescheduled(_cannot_abort)
            self._jobs.put((fn, args, None, None))
            with trio.CancelScope(shield=True):  # not abandoned: see the class docstring
                await trio.lowlevel.wait_readable(self._answered)
            self._answered.recv(1)
            answer, self._answer = self._answer, None
            assert answer is not None
            return answer.unwrap()
        finally:
            self.pending -= 1

    def _main(self, token: trio.lowlevel.TrioToken, starter: trio.lowlevel.Task) -> None:
        opened = outcome.capture(self._connect)
        # Wrapped in a Value: start() joins this thread before re-raising a connect error.
        if isinstance(opened, outcome.Error):
            _deliver(token, starter, outcome.Value(opened))
            return
        conn = self._conn = opened.unwrap()
        _deliver(token, starter, outcome.Value(outcome.Value(None)))
        while True:
            fn, args, to, task = self._jobs.get()
            # Not swallowed: the outcome (value or exception) is re-raised in the waiting task.
            answer = outcome.capture(fn, conn, *args)
            if to is None or task is None:
                self._answer = answer
                self._answer_ready.send(b"\0")
            else:
                _deliver(to, task, answer)
            if fn is _close_connection:
                return


def _close_connection(conn: sqlite3.Connection) -> None:
    conn.close()


def _cannot_abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


def _deliver(
    token: trio.lowlevel.TrioToken, task: trio.lowlevel.Task, result: outcome.Outcome[Any]
) -> None:
    with contextlib.suppress(trio.RunFinishedError):  # that run has ended: nobody to tell
        token.run_sync_soon(trio.lowlevel.reschedule, task, result)


async def _join(thread: threading.Thread) -> None:
    # join() blocks (briefly, the thread is exiting): keep it off the trio thread.
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(thread.join)

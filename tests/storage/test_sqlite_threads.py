"""The SQLite connection thread's hand-off from trio (storage/sqlite/_threads.py): how many
scheduling rounds a job costs its caller, the bound on queued jobs, and cancellation before a
job is submitted. Real threads on an in-memory database."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from storage.sqlite import ConnectionThread


@asynccontextmanager
async def memory_thread(max_pending: int = 1024) -> AsyncIterator[ConnectionThread]:
    thread = ConnectionThread(
        "test-db",
        lambda: sqlite3.connect(":memory:", isolation_level=None, check_same_thread=True),
        max_pending=max_pending,
    )
    await thread.start()
    try:
        yield thread
    finally:
        await thread.aclose()


class StepCounter(trio.abc.Instrument):
    """Counts the steps (runs between two yields) of one task."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_a_job_with_room_in_the_queue_costs_its_caller_one_yield() -> None:
    async with memory_thread() as thread:
        counter = StepCounter(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(counter)
        try:
            assert await thread.run(lambda conn: conn.execute("SELECT 6 * 7").fetchone()[0]) == 42
        finally:
            trio.lowlevel.remove_instrument(counter)
    # The one step after the job's result arrives; a semaphore checkpoint would add one.
    assert counter.steps == 1


async def test_a_cancelled_caller_never_submits_its_job() -> None:
    ran: list[str] = []
    async with memory_thread() as thread:
        with trio.CancelScope() as scope:
            scope.cancel()
            await thread.run(lambda conn: ran.append("ran"))
        assert scope.cancelled_caught
        assert await thread.run(lambda conn: len(ran)) == 0


async def test_callers_past_max_pending_wait_and_then_run_in_order() -> None:
    gate = threading.Event()
    order: list[int] = []

    def job(conn: sqlite3.Connection, n: int) -> int:
        if n == 0:
            gate.wait()
        order.append(n)
        return n

    async with memory_thread(max_pending=1) as thread, trio.open_nursery() as nursery:

        async def caller(n: int) -> None:
            assert await thread.run(job, n) == n

        nursery.start_soon(caller, 0)
        await trio.testing.wait_all_tasks_blocked()
        for n in (1, 2):
            nursery.start_soon(caller, n)
            await trio.testing.wait_all_tasks_blocked()
        assert thread.pending == 1  # the other two wait for a slot, not in the thread's queue
        gate.set()
    assert order == [0, 1, 2]


async def test_a_caller_waiting_for_a_slot_can_be_cancelled() -> None:
    gate = threading.Event()
    ran: list[str] = []
    async with memory_thread(max_pending=1) as thread, trio.open_nursery() as nursery:
        nursery.start_soon(thread.run, lambda conn: gate.wait())
        await trio.testing.wait_all_tasks_blocked()
        scope = trio.CancelScope()

        async def waiting() -> None:
            with scope:
                await thread.run(lambda conn: ran.append("ran"))

        nursery.start_soon(waiting)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert scope.cancelled_caught
    assert ran == []


async def test_concurrent_callers_each_get_their_own_answer() -> None:
    # The first job's answer comes back through the thread's socket pair, the others' through
    # trio's entry queue (a second caller may not wait on the same socket): none is mixed up.
    gate = threading.Event()

    def job(conn: sqlite3.Connection, n: int) -> int:
        if n == 0:
            gate.wait()
        if n == 2:
            raise KeyError(n)
        return n * 10

    results: dict[int, object] = {}
    async with memory_thread() as thread, trio.open_nursery() as nursery:

        async def caller(n: int) -> None:
            try:
                results[n] = await thread.run(job, n)
            except KeyError as exc:
                results[n] = exc.args

        for n in range(4):
            nursery.start_soon(caller, n)
            await trio.testing.wait_all_tasks_blocked()
        assert thread.pending == 4
        gate.set()
    assert results == {0: 0, 1: 10, 2: (2,), 3: 30}
    async with memory_thread() as thread:  # and the socket pair's path again, alone
        assert await thread.run(job, 5) == 50

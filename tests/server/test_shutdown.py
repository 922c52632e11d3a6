"""Drain: shutdown's steps in their order, on the autojump clock (the end-to-end drain of a real
process is tests/e2e/test_drain.py)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from server.shutdown import Drain

TIMEOUT = 8.0


class _Steps:
    """The parts the drain drives, recording what it asks of them, in order."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.finished = trio.Event()  # the writer's

    def close_input(self) -> None:
        self.done.append("writer input closed")

    async def stop_keepalive(self) -> None:
        self.done.append("keep-alive stopped")

    def stop(self) -> None:
        self.done.append("http stopped")

    def stop_accepting(self) -> None:
        self.done.append("accepting stopped")


async def _handler(drain: Drain, steps: _Steps, answers: bool = True) -> None:
    """A WebSocket handler: reads until stopped, waits for the writer's acks, then closes."""
    with drain.serving():
        with drain.reading(trio.CancelScope()):
            await trio.sleep_forever()
        steps.done.append("reading stopped")
        await drain.writer_flushed()
        steps.done.append("closed 1001")
        if not answers:  # a peer that never answers the close
            await trio.sleep_forever()


async def _drain(drain: Drain, steps: _Steps, root: trio.CancelScope) -> None:
    await drain.run(connections=[1, 2], writer=steps, http=steps, listener=steps, root=root)


async def test_the_steps_run_in_order_and_the_last_acks_go_out_before_the_close(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "server.app")
    drain, steps = Drain(TIMEOUT), _Steps()
    async with trio.open_nursery() as root:
        root.start_soon(_handler, drain, steps)
        await trio.testing.wait_all_tasks_blocked()
        assert not drain.draining

        async def writer_commits_then_finishes() -> None:
            await trio.sleep(1.0)  # the queued batch's commit
            steps.done.append("writer finished")
            steps.finished.set()

        root.start_soon(writer_commits_then_finishes)
        await _drain(drain, steps, root.cancel_scope)
        assert drain.draining
    assert steps.done == [
        "writer input closed",
        "reading stopped",
        "writer finished",
        "closed 1001",
        "keep-alive stopped",
        "accepting stopped",
        "http stopped",
    ]
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "server.app"]
    assert lines == [("INFO", "draining"), ("INFO", "drained")]
    assert caplog.records[-1].__dict__["drain_s"] == 1.0


async def test_a_reader_starting_after_the_drain_began_is_stopped_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    drain, steps = Drain(TIMEOUT), _Steps()
    steps.finished.set()
    await _drain(drain, steps, trio.CancelScope())  # no handler: nothing to wait for
    with trio.fail_after(0.001):  # were it to wait, the autojump clock would jump past this
        await _handler(drain, steps)
    assert steps.done[-2:] == ["reading stopped", "closed 1001"]


async def test_a_peer_that_never_answers_the_close_times_the_drain_out(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "server.app")
    drain, steps = Drain(TIMEOUT), _Steps()
    steps.finished.set()
    async with trio.open_nursery() as root:
        root.start_soon(_handler, drain, steps, False)
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        await _drain(drain, steps, root.cancel_scope)
        assert trio.current_time() - started == TIMEOUT
    assert steps.done[-3:] == ["keep-alive stopped", "accepting stopped", "http stopped"]
    record = caplog.records[-1]
    assert (record.levelname, record.getMessage()) == ("WARNING", "drain timed out")
    assert (record.__dict__["drain_s"], record.__dict__["connections"]) == (TIMEOUT, 2)

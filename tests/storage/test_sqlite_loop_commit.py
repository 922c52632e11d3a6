"""Commits on the event loop (storage/sqlite/_loop_commit.py), on real SQLite files: which batches
take that path, that a locked database or a slow disk sends them to the writer thread instead,
and that the checkpoints SQLite's autocheckpoint used to run now run on the writer thread."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import pytest
import trio
import trio.testing

from storage import CompositeStore, NewMessage, User, open_store
from storage.sqlite import SQLiteStore
from storage.sqlite._loop_commit import (
    CHECKPOINT_FRAMES,
    LOOP_MAX_BATCH,
    MIXED_WINDOW_S,
    CheckpointSchedule,
    LoopCommits,
)

SCRYPT_N = 2**10


def msg(user: User, text: str) -> NewMessage:
    return NewMessage(room="lobby", user_id=user.id, user_name=user.name, text=text, client_id=None)


@asynccontextmanager
async def lobby(
    path: Path, *, loop_commit: bool = True
) -> AsyncIterator[tuple[CompositeStore, SQLiteStore, User]]:
    """An open store on `path` with room "lobby" made by alice: the store, its SQLite backend
    (whose counters the tests read) and alice."""
    async with open_store(path, scrypt_n=SCRYPT_N, loop_commit=loop_commit) as store:
        backend = store.backend
        assert isinstance(backend, SQLiteStore)
        alice = await store.create_user("alice", "pw")
        await store.create_room("lobby", alice.id)
        yield store, backend, alice


def texts_without_the_wal(path: Path, tmp: Path) -> list[str]:
    """The messages in the database file alone: what checkpoints copied there."""
    copy = tmp / "copy.db"
    shutil.copyfile(path, copy)
    with closing(sqlite3.connect(copy)) as conn:
        return [row[0] for row in conn.execute("SELECT text FROM messages ORDER BY seq")]


async def test_a_small_batch_commits_on_the_loop_and_a_big_one_on_the_writer_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hibiki.db"
    async with lobby(path) as (s, backend, alice):
        one = await s.append_batch([msg(alice, "one")])
        assert (backend.commits.on_loop, backend.commits.on_thread) == (1, 0)
        big = await s.append_batch([msg(alice, f"m{i}") for i in range(LOOP_MAX_BATCH + 1)])
        assert (backend.commits.on_loop, backend.commits.on_thread) == (1, 1)
        assert [r.message.seq for r in one + big] == list(range(1, LOOP_MAX_BATCH + 3))
        # Committed, not merely done: another connection sees it.
        with closing(sqlite3.connect(path)) as other:
            assert other.execute("SELECT text FROM messages WHERE seq = 1").fetchone() == ("one",)


async def test_with_loop_commit_off_every_batch_commits_on_the_thread(tmp_path: Path) -> None:
    async with lobby(tmp_path / "hibiki.db", loop_commit=False) as (s, backend, alice):
        await s.append_batch([msg(alice, "one")])
        assert (backend.commits.on_loop, backend.commits.on_thread) == (0, 1)


async def test_a_cancelled_sender_stores_nothing(tmp_path: Path) -> None:
    async with lobby(tmp_path / "hibiki.db") as (s, _, alice):
        with trio.CancelScope() as scope:
            scope.cancel()
            await s.append_batch([msg(alice, "never")])
        assert scope.cancelled_caught
        assert await s.last_seq("lobby") == 0


async def test_a_locked_database_sends_the_batch_to_the_thread_and_the_loop_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hibiki.db"
    async with lobby(path) as (s, backend, alice):
        await s.append_batch([msg(alice, "first")])  # on the loop: its busy timeout is 0 now
        stored: list[int] = []

        async def send() -> None:
            stored.extend(r.message.seq for r in await s.append_batch([msg(alice, "x")]))

        with closing(sqlite3.connect(path, isolation_level=None)) as locker:
            locker.execute("BEGIN IMMEDIATE")  # another process's write lock
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                # Another write job after it: the thread's jobs wait for the lock, not fail.
                nursery.start_soon(s.create_room, "later", alice.id)
                # Every task blocked: the loop is free, the batch waits on the writer thread.
                await trio.testing.wait_all_tasks_blocked()
                assert stored == []
                assert (backend.commits.on_loop, backend.commits.on_thread) == (1, 1)
                locker.execute("ROLLBACK")
        assert stored == [2]
        assert await s.get_room("later") is not None


async def test_a_slow_commit_on_the_loop_pauses_them_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with lobby(tmp_path / "hibiki.db") as (s, backend, alice):
        with caplog.at_level(logging.INFO, logger="storage.sqlite._loop_commit"):
            backend.commits.took(0.5)  # as a commit stalled by the disk would report itself
            backend.commits.took(0.5)
        assert backend.commits.pauses == 2
        assert sum("held the event loop" in r.getMessage() for r in caplog.records) == 1
        await s.append_batch([msg(alice, "a")])
        assert backend.commits.on_thread == 1


async def test_checkpoints_run_on_the_writer_thread_when_due_and_never_on_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hibiki.db"
    async with lobby(path) as (s, backend, alice):
        with closing(sqlite3.connect(path)) as other:  # the schema and rows into the file
            assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        backend.checkpoints.frames_per_message = CHECKPOINT_FRAMES  # due after one message
        await s.append_batch([msg(alice, "first")])
        assert backend.commits.on_loop == 1
        assert texts_without_the_wal(path, tmp_path) == []  # in the WAL only: no autocheckpoint
        await s.append_batch([msg(alice, "second")])
        assert (backend.commits.on_thread, backend.commits.checkpoints) == (1, 1)
        assert texts_without_the_wal(path, tmp_path) == ["first", "second"]
        # It learnt what a message costs here (a few pages), so the next is ~10,000 pages away.
        assert 0.05 <= backend.checkpoints.frames_per_message < 64
        assert not backend.checkpoints.due()


def test_the_schedule_learns_frames_per_message_within_bounds() -> None:
    schedule = CheckpointSchedule(frames_per_message=8.0)
    schedule.committed(CHECKPOINT_FRAMES // 8 - 1)
    assert not schedule.due()
    schedule.committed(1)
    assert schedule.due()
    schedule.checkpointed(frames=CHECKPOINT_FRAMES // 4)  # a flood's batches share pages
    assert schedule.frames_per_message == pytest.approx(2.0)
    assert schedule.messages == 0
    schedule.committed(1)
    schedule.checkpointed(frames=10**6)  # a reader held the WAL: counted again, bounded
    assert schedule.frames_per_message == 64.0
    schedule.committed(1_000_000)
    schedule.checkpointed(frames=1)
    assert schedule.frames_per_message == 0.05


def batch(*users: int) -> tuple[NewMessage, ...]:
    return tuple(msg(User(id=u, name=f"u{u}"), "x") for u in users)


def test_commits_on_the_loop_resume_after_the_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("storage.sqlite._loop_commit.time.monotonic", lambda: now[0])
    commits = LoopCommits()
    assert commits.may_run(batch(*[1] * LOOP_MAX_BATCH))
    commits.took(0.001)
    assert commits.may_run(batch(1)) and commits.pauses == 0
    commits.took(0.2)
    assert not commits.may_run(batch(1))
    now[0] += 30.0
    assert commits.may_run(batch(1))


def test_several_senders_or_a_big_batch_keep_commits_on_the_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr("storage.sqlite._loop_commit.time.monotonic", lambda: now[0])
    commits = LoopCommits()
    assert commits.may_run(batch(1))
    now[0] += 0.01
    assert not commits.may_run(batch(2))  # another user 10 ms later: load
    now[0] += 0.01
    assert not commits.may_run(batch(1))  # still within the window of the mix
    now[0] += MIXED_WINDOW_S
    assert commits.may_run(batch(1))  # one sender again
    now[0] += MIXED_WINDOW_S + 0.001
    assert commits.may_run(batch(2))  # another user, but well apart: still light
    assert not commits.may_run(batch(1, 2))  # two users in one batch
    now[0] += MIXED_WINDOW_S + 0.001
    assert not commits.may_run(batch(*[1] * (LOOP_MAX_BATCH + 1)))  # a big batch...
    now[0] += 0.01
    assert not commits.may_run(batch(1))  # ...means load for a while

"""Several writers on one SQLite file (`hibiki serve --workers N`): two stores in one process,
each with its own writer thread and connection, and a second OS process, appending to the same
rooms at once. Seqs stay gap-free and unique, ids unique, a client_id stored once.
"""

from __future__ import annotations

import sqlite3
import sys
import textwrap
from contextlib import closing
from functools import partial
from pathlib import Path

import pytest
import trio

import storage.sqlite._connection as sqlite_connection  # white-box: the busy timeout
from storage import Appended, NewMessage, StorageError, Store, User, open_store

from ..conftest import STEP

SCRYPT_N = 2**10
ROOT = Path(__file__).resolve().parents[2]


def _msg(room: str, user: User, text: str, client_id: str | None = None) -> NewMessage:
    return NewMessage(
        room=room, user_id=user.id, user_name=user.name, text=text, client_id=client_id
    )


async def _setup(path: Path) -> User:
    async with open_store(path, scrypt_n=SCRYPT_N) as s:
        alice = await s.create_user("alice", "pw")
        for room in ("a", "b"):
            await s.create_room(room, alice.id)
    return alice


def _stored(path: Path) -> list[tuple[int, str, int, str]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(
            "SELECT m.id, r.name, m.seq, m.text FROM messages m JOIN rooms r ON r.id = m.room_id"
            " ORDER BY m.id"
        ).fetchall()


def _assert_numbering(
    path: Path, results: list[Appended], expected_texts: set[str], acked: set[str] | None = None
) -> None:
    """The stored rows hold `expected_texts`, numbered gap-free; `results` ack `acked` (default:
    all of them) each once, as stored."""
    rows = _stored(path)
    assert sorted(r[3] for r in rows) == sorted(expected_texts)
    assert len({r[0] for r in rows}) == len(rows)
    for room in ("a", "b"):
        seqs = sorted(r[2] for r in rows if r[1] == room)
        assert seqs == list(range(1, len(seqs) + 1)), f"room {room}: seqs not gap-free"
    # Every append acknowledged once, with what was stored.
    fresh = [r.message for r in results if not r.duplicate]
    assert sorted(m.text for m in fresh) == sorted(expected_texts if acked is None else acked)
    assert {(m.id, m.room, m.seq, m.text) for m in fresh} <= set(rows)


async def test_two_stores_on_one_file_number_messages_gap_free(tmp_path: Path) -> None:
    path = tmp_path / "hibiki.db"
    alice = await _setup(path)
    results: list[Appended] = []

    async def write(store: Store, tag: str) -> None:
        for i in range(40):
            batch = [
                _msg("ab"[(i + j) % 2], alice, f"{tag}{i}.{j}", f"{tag}{i}.{j}") for j in range(5)
            ]
            results.extend(await store.append_batch(batch))

    with trio.fail_after(STEP * 2):
        async with (
            open_store(path, scrypt_n=SCRYPT_N) as one,
            open_store(path, scrypt_n=SCRYPT_N) as two,
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write, one, "x")
                nursery.start_soon(write, two, "y")
            assert await one.last_seq("a") == await two.last_seq("a") == 200
    texts = {f"{t}{i}.{j}" for t in "xy" for i in range(40) for j in range(5)}
    _assert_numbering(path, results, texts)


async def test_same_client_id_from_two_stores_is_stored_once_and_the_other_is_a_duplicate(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hibiki.db"
    alice = await _setup(path)
    outcomes: dict[str, list[Appended]] = {}

    async def write(store: Store) -> None:
        for i in range(30):
            batch = [_msg("a", alice, f"m{i}.{j}", f"c{i}.{j}") for j in range(4)]
            for r in await store.append_batch(batch):
                outcomes.setdefault(r.message.client_id or "", []).append(r)

    with trio.fail_after(STEP * 2):
        async with (
            open_store(path, scrypt_n=SCRYPT_N) as one,
            open_store(path, scrypt_n=SCRYPT_N) as two,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(write, one)
            nursery.start_soon(write, two)
    assert len(outcomes) == 120
    for client_id, pair in outcomes.items():
        assert sorted(r.duplicate for r in pair) == [False, True], client_id
        assert pair[0].message == pair[1].message
    assert len(_stored(path)) == 120
    _assert_numbering(
        path,
        [r for pair in outcomes.values() for r in pair],
        {f"m{i}.{j}" for i in range(30) for j in range(4)},
    )


async def test_writer_lock_held_past_the_busy_timeout_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hibiki.db"
    alice = await _setup(path)
    monkeypatch.setattr(sqlite_connection, "BUSY_TIMEOUT_MS", 100)
    async with open_store(path, scrypt_n=SCRYPT_N) as s:
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            with trio.fail_after(STEP), pytest.raises(StorageError, match="busy"):
                await s.append_batch([_msg("a", alice, "blocked")])
            other.execute("ROLLBACK")
        assert [r.message.seq for r in await s.append_batch([_msg("a", alice, "ok")])] == [1]


_CHILD = textwrap.dedent(
    """
    import sys, trio
    from storage import NewMessage, open_store

    async def main(path):
        async with open_store(path, scrypt_n=2**10) as s:
            for i in range(100):
                batch = [NewMessage(room="ab"[j % 2], user_id=1, user_name="alice",
                                    text=f"p{i}.{j}", client_id=None) for j in range(4)]
                await s.append_batch(batch)

    trio.run(main, sys.argv[1])
    """
)


async def test_another_process_writing_the_same_file_keeps_numbering_gap_free(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hibiki.db"
    alice = await _setup(path)
    results: list[Appended] = []
    with trio.fail_after(STEP * 3):
        async with open_store(path, scrypt_n=SCRYPT_N) as s, trio.open_nursery() as nursery:
            # check=True (the default): a failing child fails the test.
            child: trio.Process = await nursery.start(
                partial(trio.run_process, [sys.executable, "-c", _CHILD, str(path)], cwd=ROOT)
            )
            i = 0
            while child.poll() is None or i < 100:  # writing all the time the child writes
                batch = [_msg("ab"[j % 2], alice, f"q{i}.{j}") for j in range(4)]
                results.extend(await s.append_batch(batch))
                i += 1
    ours = {f"q{n}.{j}" for n in range(i) for j in range(4)}
    theirs = {f"p{n}.{j}" for n in range(100) for j in range(4)}
    _assert_numbering(path, results, ours | theirs, acked=ours)


async def test_stores_taking_turns_on_one_file_each_number_from_the_others_last_write(
    tmp_path: Path,
) -> None:
    """Strict turns, so each batch follows one the other store committed: a store numbering
    from what it remembers of its own last batch would repeat a seq or an id here."""
    path = tmp_path / "hibiki.db"
    alice = await _setup(path)
    results: list[Appended] = []
    with trio.fail_after(STEP * 2):
        async with (
            open_store(path, scrypt_n=SCRYPT_N) as one,
            open_store(path, scrypt_n=SCRYPT_N) as two,
        ):
            for turn in range(6):
                store = (one, two)[turn % 2]
                single = await store.append_batch([_msg("a", alice, f"s{turn}")])
                assert [(r.message.id, r.message.seq) for r in single] == [
                    (3 * turn + 1, 2 * turn + 1)
                ]
                both = await store.append_batch(
                    [_msg("b", alice, f"b{turn}"), _msg("a", alice, f"a{turn}")]
                )
                assert [(r.message.id, r.message.room, r.message.seq) for r in both] == [
                    (3 * turn + 2, "b", turn + 1),
                    (3 * turn + 3, "a", 2 * turn + 2),
                ]
                results += single + both
            again = await two.append_batch(
                [_msg("a", alice, "new", "c1"), _msg("a", alice, "new", "c1")]
            )
            resent = await one.append_batch([_msg("a", alice, "new", "c1")])
    assert [r.duplicate for r in again + resent] == [False, True, True]
    assert again[0].message == again[1].message == resent[0].message
    assert (again[0].message.id, again[0].message.seq) == (19, 13)
    texts = {f"{k}{t}" for k in "sab" for t in range(6)} | {"new"}
    _assert_numbering(path, [*results, again[0]], texts)

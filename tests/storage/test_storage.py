"""The store contract, run against every backend through `open_store` (real databases, no
mocks). A backend joins by adding its name to `BACKENDS` and a branch to `database_url`; what
only one backend does is tested beside it (test_sqlite.py, test_postgres.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import (
    Appended,
    Conflict,
    MembershipCache,
    NewMessage,
    NotFound,
    StorageError,
    Store,
    User,
    open_store,
)
from storage.composite import last_seqs_one_by_one
from storage.read_state import UNREAD_WINDOW

from ..postgres import LentDatabases, ReusedDatabases, TestDatabases

SCRYPT_N = 2**10  # fast for tests; production uses passwords.DEFAULT_N
BACKENDS = ["sqlite", "postgresql", "sharded"]
SHARDS = 3  # the "sharded" backend: a catalog database and this many shard databases

DatabaseUrl = Callable[[str], str]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseUrl]:
    """`url(name)`: this backend's URL of database `name`, empty when first opened; the same
    name is the same database, so a test can close and reopen it. PostgreSQL databases are
    lent by the test process's `reused_databases`, emptied between tests."""
    if request.param == "sqlite":
        yield lambda name: f"sqlite:///{tmp_path / name}.db"
        return
    if request.param not in ("postgresql", "sharded"):
        raise AssertionError(f"unknown backend {request.param}")
    pool: ReusedDatabases = request.getfixturevalue("reused_databases")
    with pool.lend() as databases:
        if request.param == "postgresql":
            yield databases.url
        else:
            yield lambda name: sharded_url(databases, name)


def sharded_url(databases: TestDatabases | LentDatabases, name: str) -> str:
    """The catalog's URL, with the shards' URLs after `#shards=` (split by `open_test_store`)."""
    catalog, *shards = databases.urls([name, *(f"{name}-shard{i}" for i in range(SHARDS))])
    return f"{catalog}#shards={','.join(shards)}"


def open_test_store(url: str) -> Store:
    """Two connections per PostgreSQL pool (catalog and each shard): enough for every contract,
    including the concurrent ones, and far cheaper to open than the default ten."""
    catalog, _, shards = url.partition("#shards=")
    return open_store(
        catalog, scrypt_n=SCRYPT_N, pool_size=2, shards=shards.split(",") if shards else ()
    )


@pytest.fixture
def make_store(database_url: DatabaseUrl) -> Callable[[], Store]:
    """Builds unopened stores that all share one database, so a test can close and reopen."""
    return lambda: open_test_store(database_url("hibiki"))


@asynccontextmanager
async def opened(store: Store) -> AsyncIterator[Store]:
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
async def store(make_store: Callable[[], Store]) -> AsyncIterator[Store]:
    async with opened(make_store()) as s:
        yield s


@pytest.fixture
async def alice(store: Store) -> User:
    return await store.create_user("alice", "alice-pw")


@pytest.fixture
async def bob(store: Store) -> User:
    return await store.create_user("bob", "bob-pw")


def msg(room: str, user: User, text: str, client_id: str | None = None) -> NewMessage:
    return NewMessage(
        room=room, user_id=user.id, user_name=user.name, text=text, client_id=client_id
    )


def seqs(results: list[Appended]) -> list[int]:
    return [r.message.seq for r in results]


# Accounts ---------------------------------------------------------------------------------


async def test_create_user_returns_user_and_taken_name_conflicts(store: Store) -> None:
    alice = await store.create_user("alice", "pw")
    bob = await store.create_user("bob", "pw")
    assert (alice.name, bob.name) == ("alice", "bob")
    assert alice.id != bob.id
    with pytest.raises(Conflict):
        await store.create_user("alice", "other-pw")


async def test_check_password_accepts_right_and_rejects_wrong_or_unknown(
    store: Store, alice: User
) -> None:
    assert await store.check_password("alice", "alice-pw") == alice
    assert await store.check_password("alice", "wrong") is None
    assert await store.check_password("alice", "") is None
    assert await store.check_password("nobody", "alice-pw") is None


async def test_token_resolves_to_its_user_until_revoked(store: Store, alice: User) -> None:
    token = await store.create_token(alice.id, ttl_seconds=3600)
    other = await store.create_token(alice.id, ttl_seconds=3600)
    assert token != other
    assert await store.user_for_token(token) == alice
    await store.revoke_token(token)
    assert await store.user_for_token(token) is None
    assert await store.user_for_token(other) == alice  # revoking one leaves the others
    assert await store.user_for_token("not-a-token") is None


async def test_expired_token_resolves_to_nobody(store: Store, alice: User) -> None:
    expired = await store.create_token(alice.id, ttl_seconds=-1)
    assert await store.user_for_token(expired) is None
    zero = await store.create_token(alice.id, ttl_seconds=0)
    assert await store.user_for_token(zero) is None


async def test_token_grant_names_its_user_and_expiry_until_revoked(
    store: Store, alice: User
) -> None:
    before = time.time_ns() // 1_000_000
    token = await store.create_token(alice.id, ttl_seconds=3600)
    after = time.time_ns() // 1_000_000
    grant = await store.grant_for_token(token)
    assert grant is not None and grant.user == alice
    assert before + 3_600_000 <= grant.expires_at <= after + 3_600_000
    await store.revoke_token(token)
    assert await store.grant_for_token(token) is None
    assert await store.grant_for_token("not-a-token") is None
    expired = await store.create_token(alice.id, ttl_seconds=-1)
    assert await store.grant_for_token(expired) is None


async def test_token_for_unknown_user_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.create_token(12345, ttl_seconds=60)


# Rooms and membership ---------------------------------------------------------------------


async def test_create_room_makes_creator_a_member_and_taken_name_conflicts(
    store: Store, alice: User, bob: User
) -> None:
    room = await store.create_room("lobby", alice.id)
    assert (room.name, room.created_by, room.last_seq) == ("lobby", alice.id, 0)
    assert await store.get_room("lobby") == room
    assert await store.is_member("lobby", alice.id)
    assert await store.members("lobby") == ["alice"]
    with pytest.raises(Conflict):
        await store.create_room("lobby", bob.id)
    assert await store.get_room("nowhere") is None


async def test_create_room_by_unknown_user_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.create_room("lobby", 999)
    assert await store.get_room("lobby") is None


async def test_list_rooms_by_name_up_to_limit(store: Store, alice: User) -> None:
    for name in ["c", "a", "b"]:
        await store.create_room(name, alice.id)
    assert [r.name for r in await store.list_rooms()] == ["a", "b", "c"]
    assert [r.name for r in await store.list_rooms(limit=2)] == ["a", "b"]


async def test_join_and_leave_change_membership(store: Store, alice: User, bob: User) -> None:
    await store.create_room("lobby", alice.id)
    await store.create_room("dev", alice.id)
    assert not await store.is_member("lobby", bob.id)
    assert await store.join_room("lobby", bob.id) is True
    assert await store.join_room("lobby", bob.id) is False  # already a member
    assert await store.join_room("dev", bob.id) is True
    assert await store.is_member("lobby", bob.id)
    assert await store.rooms_of(bob.id) == ["dev", "lobby"]
    assert await store.members("lobby") == ["alice", "bob"]
    assert await store.leave_room("lobby", bob.id) is True
    assert await store.leave_room("lobby", bob.id) is False
    assert not await store.is_member("lobby", bob.id)
    assert await store.rooms_of(bob.id) == ["dev"]
    assert await store.members("lobby") == ["alice"]
    assert await store.leave_room("nowhere", bob.id) is False


class _HeldReads:
    """Delegates to a real store, but `is_member` waits for `release` after reading."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads = 0
        self.read = trio.Event()
        self.release = trio.Event()

    async def is_member(self, room: str, user_id: int) -> bool:
        self.reads += 1
        member = await self.store.is_member(room, user_id)
        self.read.set()
        await self.release.wait()
        return member


async def test_membership_cache_never_keeps_a_read_that_a_change_overtook(
    store: Store, alice: User, bob: User
) -> None:
    await store.create_room("lobby", alice.id)
    await store.join_room("lobby", bob.id)
    held = _HeldReads(store)
    cache = MembershipCache(held, maxsize=100, ttl=60)  # type: ignore[arg-type]
    answers: list[bool] = []
    async with trio.open_nursery() as nursery:

        async def ask() -> None:
            answers.append(await cache.is_member("lobby", bob.id))

        nursery.start_soon(ask)
        await held.read.wait()  # the read saw "member" and is held (its thread has returned)
        await store.leave_room("lobby", bob.id)
        cache.set("lobby", bob.id, False)  # what the server does after the leave commits
        held.release.set()
    assert answers == [True]  # that send raced the leave and went first: fine
    assert held.reads == 1
    assert await cache.is_member("lobby", bob.id) is False  # not the stale True
    assert held.reads == 1  # ...and answered from the cache
    assert (cache.hits, cache.misses) == (1, 1)


async def test_join_unknown_room_is_not_found(store: Store, alice: User) -> None:
    with pytest.raises(NotFound):
        await store.join_room("nowhere", alice.id)
    assert await store.rooms_of(alice.id) == []


# Messages ---------------------------------------------------------------------------------


async def test_append_batch_numbers_each_room_gap_free_across_batches(
    store: Store, alice: User, bob: User
) -> None:
    for name in ["a", "b", "c"]:
        await store.create_room(name, alice.id)
    rooms = ["a", "b", "a", "c", "a", "b"]
    first = await store.append_batch([msg(r, alice, f"1-{i}") for i, r in enumerate(rooms)])
    second = await store.append_batch([msg(r, bob, f"2-{i}") for i, r in enumerate(rooms)])

    results = first + second
    assert [r.message.text for r in first] == [f"1-{i}" for i in range(6)]  # input order
    assert not any(r.duplicate for r in results)
    for room in ["a", "b", "c"]:
        room_seqs = [r.message.seq for r in results if r.message.room == room]
        assert room_seqs == list(range(1, len(room_seqs) + 1))
        assert await store.last_seq(room) == len(room_seqs)
    ids = [r.message.id for r in results]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [r.message.user for r in second] == ["bob"] * 6
    assert all(r.message.ts > 1_600_000_000_000 for r in results)  # milliseconds


async def test_last_seqs_reads_every_named_room_and_leaves_unknown_ones_out(
    store: Store, alice: User
) -> None:
    for room in ["a", "b", "c"]:
        await store.create_room(room, alice.id)
    await store.append_batch([msg("a", alice, "1"), msg("a", alice, "2"), msg("c", alice, "3")])
    wanted = ["a", "b", "c", "nowhere"]
    assert await store.last_seqs(wanted) == {"a": 2, "b": 0, "c": 1}
    assert await store.last_seqs([]) == {}
    # The fallback for a backend without a batched read answers the same.
    assert await last_seqs_one_by_one(store, wanted) == {"a": 2, "b": 0, "c": 1}


async def test_resent_client_id_returns_the_original_within_and_across_batches(
    store: Store, alice: User, bob: User
) -> None:
    await store.create_room("lobby", alice.id)
    await store.create_room("dev", alice.id)
    first = await store.append_batch(
        [
            msg("lobby", alice, "hello", "m1"),
            msg("lobby", alice, "hello again?", "m1"),  # same batch: a duplicate
            msg("lobby", bob, "bob's own m1", "m1"),  # another user may reuse the id
            msg("dev", alice, "other room", "m1"),  # and so may another room
        ]
    )
    assert [r.duplicate for r in first] == [False, True, False, False]
    assert first[1].message == first[0].message
    assert seqs(first) == [1, 1, 2, 1]

    second = await store.append_batch(
        [msg("lobby", alice, "next", "m2"), msg("lobby", alice, "hello resent", "m1")]
    )
    assert [r.duplicate for r in second] == [False, True]
    assert second[1].message == first[0].message  # the original: same id, seq, text, ts
    assert second[0].message.seq == 3  # the duplicate consumed no seq
    page, _ = await store.history("lobby", None, 50)
    assert [m.text for m in page] == ["hello", "bob's own m1", "next"]


async def test_batch_with_unknown_room_stores_nothing(store: Store, alice: User) -> None:
    await store.create_room("lobby", alice.id)
    await store.append_batch([msg("lobby", alice, "before")])
    with pytest.raises(NotFound):
        await store.append_batch([msg("lobby", alice, "lost", "x"), msg("nowhere", alice, "?")])
    assert await store.last_seq("lobby") == 1
    after = await store.append_batch([msg("lobby", alice, "after", "x")])
    assert seqs(after) == [2]  # no gap, and "x" was never stored
    assert not after[0].duplicate


async def test_failed_batch_rolls_back_and_numbering_resumes_without_gaps(
    store: Store, alice: User
) -> None:
    await store.create_room("lobby", alice.id)
    ghost = User(id=999, name="ghost")  # violates the messages -> users foreign key
    with pytest.raises(StorageError):
        await store.append_batch([msg("lobby", alice, "lost"), msg("lobby", ghost, "boo")])
    assert await store.last_seq("lobby") == 0
    results = await store.append_batch([msg("lobby", alice, "kept")])
    assert seqs(results) == [1]
    assert [m.text for m in (await store.history("lobby", None, 10))[0]] == ["kept"]


async def test_unknown_user_fails_a_batch_after_known_users_were_appended(
    store: Store, alice: User, bob: User
) -> None:
    await store.create_room("lobby", alice.id)
    await store.append_batch([msg("lobby", alice, "a"), msg("lobby", bob, "b")])
    ghost = User(id=999, name="ghost")
    with pytest.raises(StorageError):
        await store.append_batch([msg("lobby", alice, "lost"), msg("lobby", ghost, "boo")])
    assert seqs(await store.append_batch([msg("lobby", bob, "kept")])) == [3]


async def test_other_writes_still_check_users_after_appends(store: Store, alice: User) -> None:
    await store.create_room("lobby", alice.id)
    await store.append_batch([msg("lobby", alice, "hi")])
    with pytest.raises(NotFound):
        await store.create_room("dev", 12345)
    with pytest.raises(NotFound):
        await store.join_room("lobby", 12345)
    with pytest.raises(NotFound):
        await store.create_token(12345, ttl_seconds=60)
    assert seqs(await store.append_batch([msg("lobby", alice, "again")])) == [2]


async def test_history_pages_walk_the_room_once_in_order(store: Store, alice: User) -> None:
    await store.create_room("lobby", alice.id)
    await store.create_room("noise", alice.id)
    total = 237
    for start in range(0, total, 100):
        batch = []
        for i in range(start, min(start + 100, total)):
            batch += [msg("lobby", alice, f"m{i}"), msg("noise", alice, "x")]
        await store.append_batch(batch)

    newest, has_more = await store.history("lobby", None, 50)
    assert [m.seq for m in newest] == list(range(188, 238))  # the newest page, oldest first
    assert has_more
    walked: list[int] = []
    before: int | None = None
    pages = 0
    while True:
        page, has_more = await store.history("lobby", before, 50)
        pages += 1
        walked = [m.seq for m in page] + walked
        assert [m.text for m in page] == [f"m{m.seq - 1}" for m in page]
        if not has_more:
            break
        before = page[0].seq
    assert walked == list(range(1, total + 1))
    assert pages == 5
    assert await store.history("lobby", 1, 50) == ([], False)
    exact, more = await store.history("lobby", 51, 50)
    assert ([m.seq for m in exact], more) == (list(range(1, 51)), False)
    assert await store.history("nowhere", None, 50) == ([], False)


async def test_messages_after_returns_the_gap_oldest_first(store: Store, alice: User) -> None:
    await store.create_room("lobby", alice.id)
    await store.append_batch([msg("lobby", alice, f"m{i}") for i in range(10)])
    assert [m.seq for m in await store.messages_after("lobby", 7, 100)] == [8, 9, 10]
    assert [m.seq for m in await store.messages_after("lobby", 0, 3)] == [1, 2, 3]
    assert await store.messages_after("lobby", 10, 100) == []


async def test_last_seq_of_empty_room_is_zero_and_unknown_room_not_found(
    store: Store, alice: User
) -> None:
    await store.create_room("lobby", alice.id)
    assert await store.last_seq("lobby") == 0
    assert (await store.get_room("lobby")) is not None
    with pytest.raises(NotFound):
        await store.last_seq("nowhere")


async def test_concurrent_appenders_get_unique_gap_free_seqs(store: Store, alice: User) -> None:
    await store.create_room("a", alice.id)
    await store.create_room("b", alice.id)
    results: list[Appended] = []

    async def sender(n: int) -> None:
        for k in range(5):
            batch = [msg("a" if (n + k + i) % 2 else "b", alice, f"{n}-{k}-{i}") for i in range(3)]
            results.extend(await store.append_batch(batch))

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(sender, n)

    assert len(results) == 300
    for room in ["a", "b"]:
        room_seqs = sorted(r.message.seq for r in results if r.message.room == room)
        assert room_seqs == list(range(1, len(room_seqs) + 1))
        assert await store.last_seq(room) == len(room_seqs)
    assert len({r.message.id for r in results}) == 300


ROOMS = ["a", "b", "nowhere"]  # "nowhere" is never created: a batch holding it must fail


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(ROOMS[:2] * 10 + ROOMS[2:]),
                st.sampled_from([1, 2]),
                st.none() | st.sampled_from(["x", "y", "z"]),
            ),
            min_size=1,
            max_size=8,
        ),
        max_size=6,
    )
)
async def test_append_batch_matches_a_model_of_numbering_and_dedupe(
    database_url: DatabaseUrl, batches: list[list[tuple[str, int, str | None]]]
) -> None:
    # One database for every example (a database per example cost ~0.5 s each on PostgreSQL:
    # CREATE and DROP DATABASE); each example gets names of its own in it instead.
    tag = uuid.uuid4().hex[:8]
    rooms = {name: f"{name}-{tag}" for name in ROOMS}
    async with open_test_store(database_url("model")) as s:
        made = [await s.create_user(f"{n}-{tag}", "pw") for n in ("u1", "u2")]
        users = {1: made[0], 2: made[1]}
        for room in ROOMS[:2]:
            await s.create_room(rooms[room], made[0].id)
        last_seq = {rooms[r]: 0 for r in ROOMS[:2]}
        originals: dict[tuple[str, int, str], tuple[int, int]] = {}
        last_id = 0
        for spec in batches:
            batch = [msg(rooms[room], users[u], "t", cid) for room, u, cid in spec]
            if any(room == "nowhere" for room, _, _ in spec):
                with pytest.raises(NotFound):
                    await s.append_batch(batch)
                continue
            for m, result in zip(batch, await s.append_batch(batch), strict=True):
                key = None if m.client_id is None else (m.room, m.user_id, m.client_id)
                if key is not None and key in originals:
                    assert result.duplicate
                    assert (result.message.id, result.message.seq) == originals[key]
                    continue
                assert not result.duplicate
                last_seq[m.room] += 1
                assert result.message.seq == last_seq[m.room]
                assert result.message.id > last_id
                last_id = result.message.id
                if key is not None:
                    originals[key] = (result.message.id, result.message.seq)
        for room, last in last_seq.items():
            assert await s.last_seq(room) == last
            page, has_more = await s.history(room, None, 100)
            assert [m.seq for m in page] == list(range(1, last + 1)) and not has_more


async def test_everything_survives_close_and_reopen(make_store: Callable[[], Store]) -> None:
    async with opened(make_store()) as first:
        alice = await first.create_user("alice", "pw")
        token = await first.create_token(alice.id, ttl_seconds=3600)
        await first.create_room("lobby", alice.id)
        stored = await first.append_batch([msg("lobby", alice, f"m{i}", f"c{i}") for i in range(3)])

    async with opened(make_store()) as second:
        assert await second.check_password("alice", "pw") == alice
        assert await second.user_for_token(token) == alice
        assert await second.last_seq("lobby") == 3
        page, has_more = await second.history("lobby", None, 10)
        assert page == [r.message for r in stored] and not has_more
        again = await second.append_batch(
            [msg("lobby", alice, "dup", "c1"), msg("lobby", alice, "new")]
        )
        assert again[0] == Appended(stored[1].message, duplicate=True)
        assert again[1].message.seq == 4
        assert again[1].message.id > stored[-1].message.id


async def test_aclose_is_idempotent_and_later_calls_fail(store: Store) -> None:
    await store.aclose()
    await store.aclose()
    with pytest.raises(StorageError):
        await store.get_room("lobby")


async def test_a_negative_limit_is_refused(store: Store, alice: User) -> None:
    await store.create_room("lobby", alice.id)
    with pytest.raises(ValueError, match="limit"):
        await store.list_rooms(limit=-1)
    with pytest.raises(ValueError, match="limit"):
        await store.history("lobby", None, -1)
    with pytest.raises(ValueError, match="limit"):
        await store.messages_after("lobby", 0, -1)
    assert await store.history("lobby", None, 0) == ([], False)


async def test_probe_commits_and_changes_nothing(store: Store, alice: User) -> None:
    await store.create_room("lobby", alice.id)
    stored = await store.append_batch([msg("lobby", alice, "kept")])
    assert await store.probe(2.0) is None
    assert await store.history("lobby", None, 10) == ([stored[0].message], False)
    assert seqs(await store.append_batch([msg("lobby", alice, "next")])) == [2]


# Read state (issue #15) ---------------------------------------------------------------------


async def test_read_cursor_only_moves_forward_and_is_per_user_and_room(
    store: Store, alice: User, bob: User
) -> None:
    for room in ["a", "b"]:
        await store.create_room(room, alice.id)
    assert await store.read_cursors(alice.id) == {}
    assert await store.mark_read("a", alice.id, 5) == 5
    assert await store.mark_read("a", alice.id, 3) == 5  # a step back is ignored
    assert await store.mark_read("a", alice.id, 7) == 7
    assert await store.mark_read("b", alice.id, 0) == 0
    assert await store.mark_read("a", bob.id, 2) == 2
    assert await store.read_cursors(alice.id) == {"a": 7, "b": 0}
    assert await store.read_cursors(bob.id) == {"a": 2}
    with pytest.raises(NotFound):
        await store.mark_read("nowhere", alice.id, 1)
    with pytest.raises(NotFound):
        await store.mark_read("a", 10_000, 1)  # unknown user
    with pytest.raises(ValueError, match="seq"):
        await store.mark_read("a", alice.id, -1)


async def test_concurrent_marks_of_one_cursor_keep_the_largest(store: Store, alice: User) -> None:
    await store.create_room("a", alice.id)
    async with trio.open_nursery() as nursery:
        for seq in [4, 9, 1, 6, 9, 2]:
            nursery.start_soon(store.mark_read, "a", alice.id, seq)
    assert await store.read_cursors(alice.id) == {"a": 9}


async def test_unread_count_skips_own_messages_and_stops_at_last_seq_and_window(
    store: Store, alice: User, bob: User
) -> None:
    await store.create_room("a", alice.id)
    await store.create_room("empty", alice.id)
    # seqs 1..6: alice, bob, bob, alice, bob, bob
    authors = [alice, bob, bob, alice, bob, bob]
    await store.append_batch([msg("a", who, f"m{i}") for i, who in enumerate(authors)])
    assert await store.unread_count("a", 0, 6, alice.id) == 4
    assert await store.unread_count("a", 0, 6, bob.id) == 2
    assert await store.unread_count("a", 3, 6, alice.id) == 2
    assert await store.unread_count("a", 3, 4, alice.id) == 0  # only up to the given last seq
    assert await store.unread_count("a", 6, 6, alice.id) == 0
    assert await store.unread_count("empty", 0, 0, alice.id) == 0
    assert await store.unread_count("nowhere", 0, 10, alice.id) == 0
    many = UNREAD_WINDOW + 5
    for start in range(0, many, 500):
        count = min(500, many - start)
        await store.append_batch([msg("a", bob, f"w{start + i}") for i in range(count)])
    last = await store.last_seq("a")
    assert await store.unread_count("a", 0, last, alice.id) == UNREAD_WINDOW - 2  # in the window
    assert await store.unread_count("a", 6, last, alice.id) == UNREAD_WINDOW


async def test_read_cursors_survive_close_and_reopen(make_store: Callable[[], Store]) -> None:
    async with opened(make_store()) as first:
        alice = await first.create_user("alice", "alice-pw")
        await first.create_room("a", alice.id)
        await first.mark_read("a", alice.id, 3)
    async with opened(make_store()) as second:
        assert await second.read_cursors(alice.id) == {"a": 3}

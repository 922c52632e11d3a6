"""The account policy (`storage.Accounts`) on in-memory account rows: what every backend gets
without writing it. The rows are a fake; the policy, scrypt and the threads are real."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from storage import Accounts, Conflict, NotFound, User, passwords

SCRYPT_N = 2**10  # fast for tests; production uses passwords.DEFAULT_N
T0 = 1_700_000_000_000  # ms


class _Rows:
    """`AccountRecords` in dicts: keeps exactly what the policy hands it, nothing else."""

    def __init__(self) -> None:
        self.users: dict[str, tuple[User, str]] = {}
        self.tokens: dict[str, tuple[User, int]] = {}
        self.token_calls: list[tuple[int, str, int, int]] = []

    async def insert_user(self, name: str, password_hash: str) -> User:
        await trio.lowlevel.checkpoint()
        if name in self.users:
            raise Conflict(f"user name {name!r} is taken")
        user = User(len(self.users) + 1, name)
        self.users[name] = (user, password_hash)
        return user

    async def password_hash_of(self, name: str) -> tuple[User, str] | None:
        await trio.lowlevel.checkpoint()
        return self.users.get(name)

    async def insert_token(
        self,
        user_id: int,
        token_hash: str,
        expires_at_ms: int,
        now_ms: int,
        session_id: str = "",
        device: str = "",
    ) -> None:
        await trio.lowlevel.checkpoint()
        self.token_calls.append((user_id, token_hash, expires_at_ms, now_ms))
        user = next((u for u, _ in self.users.values() if u.id == user_id), None)
        if user is None:
            raise NotFound("unknown user id")
        self.tokens[token_hash] = (user, expires_at_ms)

    async def token_record(self, token_hash: str) -> tuple[User, int] | None:
        await trio.lowlevel.checkpoint()
        return self.tokens.get(token_hash)

    async def delete_token(self, token_hash: str) -> None:
        await trio.lowlevel.checkpoint()
        self.tokens.pop(token_hash, None)


class _Clock:
    def __init__(self) -> None:
        self.now_ms = T0

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def rows() -> _Rows:
    return _Rows()


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
async def accounts(rows: _Rows, clock: _Clock) -> AsyncIterator[Accounts]:
    policy = Accounts(rows, scrypt_n=SCRYPT_N, clock_ms=clock)
    await policy.open()
    yield policy


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every encoded hash `passwords.verify_password` is asked about (it still runs)."""
    seen: list[str] = []
    real = passwords.verify_password

    def spy(password: str, encoded: str) -> bool:
        seen.append(encoded)
        return real(password, encoded)

    monkeypatch.setattr(passwords, "verify_password", spy)
    return seen


def _cost(encoded: str) -> tuple[str, ...]:
    """scheme, n, r, p of an encoded scrypt hash: what its verification costs."""
    return tuple(encoded.split("$")[:4])


async def test_only_a_salted_hash_of_the_password_reaches_the_backend(
    accounts: Accounts, rows: _Rows
) -> None:
    alice = await accounts.create_user("alice", "correct horse")
    (user, encoded), *_ = rows.users.values()
    assert user == alice
    assert _cost(encoded) == ("scrypt", str(SCRYPT_N), "8", "1")
    assert "correct horse" not in encoded
    assert passwords.verify_password("correct horse", encoded)
    await accounts.create_user("bob", "correct horse")
    assert rows.users["bob"][1] != encoded  # a fresh salt each time
    with pytest.raises(Conflict):
        await accounts.create_user("alice", "other")


async def test_an_unknown_user_costs_one_verification_against_a_dummy_of_the_same_cost(
    accounts: Accounts, verified: list[str]
) -> None:
    await accounts.create_user("alice", "pw")
    assert await accounts.check_password("alice", "pw") == User(1, "alice")
    assert await accounts.check_password("alice", "wrong") is None
    assert await accounts.check_password("nobody", "pw") is None
    assert await accounts.check_password("nobody", "") is None
    real, _, dummy, again = verified
    assert dummy == again  # made once, at open, not per login
    assert dummy != real
    assert _cost(dummy) == _cost(real)


async def test_the_dummy_hash_is_made_at_open(rows: _Rows, verified: list[str]) -> None:
    policy = Accounts(rows, scrypt_n=SCRYPT_N)
    with pytest.raises(RuntimeError, match="open"):
        await policy.check_password("nobody", "pw")
    assert verified == []
    await policy.open()
    assert await policy.check_password("nobody", "pw") is None
    assert len(verified) == 1


async def test_a_token_is_stored_as_its_hash_and_valid_until_now_plus_ttl(
    accounts: Accounts, rows: _Rows, clock: _Clock
) -> None:
    alice = await accounts.create_user("alice", "pw")
    token = await accounts.create_token(alice.id, ttl_seconds=60)
    other = await accounts.create_token(alice.id, ttl_seconds=0.5)
    assert token != other and len(token) >= 43  # 256 random bits, URL-safe
    stored = passwords.token_hash(token)
    assert rows.token_calls[0] == (alice.id, stored, T0 + 60_000, T0)
    assert rows.token_calls[1][2] == T0 + 500
    assert token not in rows.tokens and stored in rows.tokens

    clock.now_ms = T0 + 59_999
    assert await accounts.user_for_token(token) == alice
    assert await accounts.user_for_token(other) is None
    clock.now_ms = T0 + 60_000  # expiry is exclusive
    assert await accounts.user_for_token(token) is None
    assert await accounts.user_for_token("not-a-token") is None


async def test_revoking_deletes_the_tokens_hash(accounts: Accounts, rows: _Rows) -> None:
    alice = await accounts.create_user("alice", "pw")
    token = await accounts.create_token(alice.id, ttl_seconds=60)
    kept = await accounts.create_token(alice.id, ttl_seconds=60)
    await accounts.revoke_token(token)
    assert list(rows.tokens) == [passwords.token_hash(kept)]
    assert await accounts.user_for_token(token) is None
    assert await accounts.user_for_token(kept) == alice


async def test_a_token_for_an_unknown_user_is_the_backends_not_found(
    accounts: Accounts,
) -> None:
    with pytest.raises(NotFound):
        await accounts.create_token(12345, ttl_seconds=60)


def test_an_invalid_scrypt_cost_is_refused_up_front(rows: _Rows) -> None:
    with pytest.raises(ValueError, match="power of 2"):
        Accounts(rows, scrypt_n=1000)


async def test_hashing_runs_on_threads_at_most_one_per_cpu_at_once(
    accounts: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    await accounts.create_user("alice", "pw")
    limit = os.cpu_count() or 1
    gate = threading.Event()
    trio_thread = threading.get_ident()
    threads: set[int] = set()
    real = passwords.verify_password

    def held(password: str, encoded: str) -> bool:
        threads.add(threading.get_ident())
        gate.wait(timeout=30)
        return real(password, encoded)

    monkeypatch.setattr(passwords, "verify_password", held)
    results: list[User | None] = []

    async def login() -> None:
        results.append(await accounts.check_password("alice", "pw"))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            try:
                for _ in range(limit + 2):
                    nursery.start_soon(login)
                await trio.testing.wait_all_tasks_blocked()
                stats = accounts.kdf_limiter.statistics()
                assert (stats.borrowed_tokens, stats.tasks_waiting) == (limit, 2)
            finally:
                gate.set()
    assert results == [User(1, "alice")] * (limit + 2)
    assert trio_thread not in threads


def test_password_hash_is_salted_and_verifies_only_the_right_password() -> None:
    first = passwords.hash_password("pw", n=SCRYPT_N)
    second = passwords.hash_password("pw", n=SCRYPT_N)
    assert first != second  # fresh salt each time
    assert passwords.verify_password("pw", first) and passwords.verify_password("pw", second)
    assert not passwords.verify_password("pW", first)
    with pytest.raises(ValueError):
        passwords.verify_password("pw", "md5$abc")

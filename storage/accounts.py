"""The account policy, written once above the backends: how passwords are hashed and checked,
and what a bearer token is. A backend only stores and fetches the rows (`AccountRecords`), so a
second backend cannot drift from the first on any of this."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import trio

from storage import passwords
from storage.protocols import AccountRecords, TokenGrant, User

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch: token expiry is wall-clock time, shared by processes."""
    return time.time_ns() // 1_000_000


class Accounts:
    """`AccountStore` on a backend's account rows.

    - Passwords are hashed with scrypt at cost `scrypt_n` (`storage.passwords`), on worker
      threads, at most one per CPU at once (`kdf_limiter`): each hash takes a core and ~16 MiB,
      and must run on neither the trio thread nor a database thread.
    - `check_password` for an unknown name verifies against a dummy hash of the same cost, made
      by `open()`, so a login for a name that does not exist costs what a wrong password costs.
    - A token is 256 random bits; the backend keeps only its SHA-256 and an absolute expiry,
      and the token is valid while now < expires_at.
    """

    def __init__(
        self,
        records: AccountRecords,
        *,
        scrypt_n: int = passwords.DEFAULT_N,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        passwords.check_cost(scrypt_n)
        self._records = records
        self._scrypt_n = scrypt_n
        self._clock_ms = clock_ms
        self.kdf_limiter = trio.CapacityLimiter(os.cpu_count() or 1)
        self._dummy_hash: str | None = None

    async def open(self) -> None:
        """Make the dummy hash: one KDF at the configured cost."""
        self._dummy_hash = await self._kdf(self._hash, passwords.new_token())

    async def create_user(self, name: str, password: str) -> User:
        encoded = await self._kdf(self._hash, password)
        return await self._records.insert_user(name, encoded)

    async def check_password(self, name: str, password: str) -> User | None:
        found = await self._records.password_hash_of(name)
        if found is not None:
            encoded = found[1]
        elif self._dummy_hash is not None:
            encoded = self._dummy_hash
        else:
            raise RuntimeError("Accounts.open() makes the dummy hash; call it first")
        matches = await self._kdf(passwords.verify_password, password, encoded)
        return found[0] if found is not None and matches else None

    async def create_token(self, user_id: int, ttl_seconds: float) -> str:
        token = passwords.new_token()
        now = self._clock_ms()
        expires_at = now + round(ttl_seconds * 1000)
        await self._records.insert_token(user_id, passwords.token_hash(token), expires_at, now)
        return token

    async def user_for_token(self, token: str) -> User | None:
        grant = await self.grant_for_token(token)
        return None if grant is None else grant.user

    async def grant_for_token(self, token: str) -> TokenGrant | None:
        found = await self._records.token_record(passwords.token_hash(token))
        if found is None:
            return None
        user, expires_at = found
        return TokenGrant(user, expires_at) if self._clock_ms() < expires_at else None

    async def revoke_token(self, token: str) -> None:
        await self._records.delete_token(passwords.token_hash(token))

    def _hash(self, password: str) -> str:
        return passwords.hash_password(password, n=self._scrypt_n)

    async def _kdf(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        # scrypt releases the GIL: a few run in parallel, never on a database thread.
        return await trio.to_thread.run_sync(fn, *args, limiter=self.kdf_limiter)

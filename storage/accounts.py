"""The account policy, written once above the backends: how passwords are hashed and checked,
what a bearer token and its session are, and which display names are accepted. A backend only
stores and fetches the rows (`AccountRecords`), so a second backend cannot drift from the first on
any of this."""

from __future__ import annotations

import os
import secrets
import time
import unicodedata
from collections.abc import Callable, Mapping
from typing import TypeVar, TypeVarTuple

import trio

from protocol import refused_character
from storage import passwords
from storage.protocols import AccountRecords, Profile, Session, TokenGrant, User

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

MAX_DISPLAY_NAME = 64  # characters (code points), after trimming and NFC normalisation
# Bidirectional controls: in a name shown beside others' they reorder what follows (spoofing).
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e") | frozenset(
    "\u2066\u2067\u2068\u2069"
)
MAX_DEVICE = 100  # characters of a session's device label kept; the rest is cut off


def check_display_name(value: str | None) -> str | None:
    """The display name to store for `value`: None (cleared) for None or blank; else `value`
    NFC-normalised with surrounding whitespace trimmed, of 1..MAX_DISPLAY_NAME characters, none
    of them a line break or tab, a control character, a bidirectional control, a lone surrogate
    or a noncharacter. `ValueError` (saying why) otherwise."""
    if value is None:
        return None
    name = unicodedata.normalize("NFC", value).strip()
    if not name:
        return None
    if len(name) > MAX_DISPLAY_NAME:
        raise ValueError(f"display_name is over {MAX_DISPLAY_NAME} characters")
    refused = refused_character(name)
    if refused is None and ("\n" in name or "\r" in name or "\t" in name):
        refused = "a line break or tab"
    if refused is None and not _BIDI_CONTROLS.isdisjoint(name):
        refused = "a bidirectional control character"
    if refused is not None:
        raise ValueError(f"display_name contains {refused}")
    return name


def device_label(value: str) -> str:
    """A session's device label as stored: refused characters dropped, whitespace collapsed,
    cut at MAX_DEVICE characters (it comes from a User-Agent or a login body: free text)."""
    kept = "".join(ch for ch in value if refused_character(ch) is None)
    return " ".join(kept.split())[:MAX_DEVICE]


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

    async def create_token(self, user_id: int, ttl_seconds: float, device: str = "") -> str:
        token = passwords.new_token()
        now = self._clock_ms()
        expires_at = now + round(ttl_seconds * 1000)
        # The session id is random, unrelated to the token: listing sessions reveals no token.
        session_id = secrets.token_hex(8)
        hashed = passwords.token_hash(token)
        await self._records.insert_token(
            user_id, hashed, expires_at, now, session_id, device_label(device)
        )
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

    async def sessions(self, user_id: int) -> list[Session]:
        return await self._records.session_rows(user_id, self._clock_ms())

    async def revoke_session(self, user_id: int, session_id: str) -> str | None:
        revoked = await self._records.delete_sessions(user_id, session_id, None)
        return revoked[0] if revoked else None

    async def revoke_sessions(self, user_id: int, keep_token: str | None) -> list[str]:
        keep = None if keep_token is None else passwords.token_hash(keep_token)
        return await self._records.delete_sessions(user_id, None, keep)

    async def change_password(
        self, user: User, old: str, new: str, keep_token: str | None
    ) -> list[str] | None:
        if await self.check_password(user.name, old) != user:
            return None
        encoded = await self._kdf(self._hash, new)
        keep = None if keep_token is None else passwords.token_hash(keep_token)
        return await self._records.replace_password(user.id, encoded, keep)

    async def set_display_name(self, user_id: int, display_name: str | None) -> str | None:
        checked = check_display_name(display_name)
        await self._records.update_display_name(user_id, checked)
        return checked

    async def profile(self, name: str) -> Profile | None:
        return await self._records.profile_row(name)

    async def record_activity(self, sessions: Mapping[str, int], users: Mapping[int, int]) -> None:
        if sessions or users:
            await self._records.touch(sessions, users)

    def _hash(self, password: str) -> str:
        return passwords.hash_password(password, n=self._scrypt_n)

    async def _kdf(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        # scrypt releases the GIL: a few run in parallel, never on a database thread.
        return await trio.to_thread.run_sync(fn, *args, limiter=self.kdf_limiter)

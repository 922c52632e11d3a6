"""Failed logins counted per client address and per account, so password guessing crawls.

The rules (docs/http.md#login-throttling is the contract):
- An address's failures are forgotten once `address_window` passes without a new one (or after
  its block ends). Its `address_limit`-th failure blocks it for `address_backoff`, and each
  further one doubles that, up to `address_window`: a guesser gets a few dozen tries, then about
  one per window.
- An account's failures, from any address, are forgotten `account_window` after the last one.
  Past `account_limit`, only the addresses with a failure of their own on record are refused; an
  address that has not failed is let through. So a distributed guesser still hits the limit, but
  cannot lock the real user out: from an address that has not failed they get in at the first
  try, and otherwise wait at most `address_window` after their own last failure.
- A success clears the account's failures, not the address's: logging in to an account of one's
  own must not reset a guesser's count.

Refused attempts are not failures (they ran no KDF). Both tables are bounded (the least recently
used record goes first) and are touched only from the trio thread: cachetools is not thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TLRUCache

MAX_ENTRIES = 100_000  # per table; both full take about 60 MiB
_MAX_DOUBLINGS = 40  # 2**40 s is past any window: no need for larger powers


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an attempt may not run its KDF now, and how long until it may (seconds)."""

    limit: str  # "address" or "account"
    retry_after: float


@dataclass(slots=True)
class _Failures:
    count: int
    last: float  # time of the latest failure
    blocked_until: float  # addresses: no attempt before this (== last when not blocked)


class LoginThrottle:
    """The failure tables and the rules above; `clock` gives monotonic seconds (trio's)."""

    def __init__(
        self,
        *,
        address_limit: int,
        address_window: float,
        address_backoff: float,
        account_limit: int,
        account_window: float,
        clock: Callable[[], float],
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._address_limit = address_limit
        self._address_window = address_window
        self._address_backoff = address_backoff
        self._account_limit = account_limit
        self._account_window = account_window
        self._clock = clock
        # Addresses are tracked even with their limit off: the account rule asks who has failed.
        self._addresses: TLRUCache[str, _Failures] = TLRUCache(
            max_entries, self._address_expiry, timer=clock
        )
        self._accounts: TLRUCache[str, _Failures] = TLRUCache(
            max_entries, self._account_expiry, timer=clock
        )

    def refusal(self, address: str, account: str | None) -> Refusal | None:
        """None if an attempt from `address` (on `account`, for a login) may run its KDF now."""
        now = self._clock()
        mine = self._addresses.get(address)
        if mine is not None and mine.blocked_until > now:
            return Refusal("address", mine.blocked_until - now)
        if account is None or mine is None or not self._account_limit:
            return None  # nothing to refuse, or an address that has not failed
        theirs = self._accounts.get(account)
        if theirs is None or theirs.count < self._account_limit:
            return None
        until = min(
            self._address_expiry(address, mine, now), self._account_expiry(account, theirs, now)
        )
        return Refusal("account", until - now)

    def failed(self, address: str, account: str | None) -> None:
        """Count a failure (wrong password; for register, a name that is taken)."""
        now = self._clock()
        mine = self._addresses.get(address) or _Failures(0, now, now)
        mine.count += 1
        mine.last = mine.blocked_until = now
        if self._address_limit and mine.count >= self._address_limit:
            doublings = min(mine.count - self._address_limit, _MAX_DOUBLINGS)
            delay = min(self._address_window, self._address_backoff * 2**doublings)
            mine.blocked_until = now + delay
        self._addresses[address] = mine  # stored again: its expiry is computed on insertion
        if account is not None and self._account_limit:
            theirs = self._accounts.get(account) or _Failures(0, now, now)
            theirs.count += 1
            theirs.last = theirs.blocked_until = now
            self._accounts[account] = theirs

    def succeeded(self, account: str) -> None:
        """A login went through: the account's failures are forgotten (the address's are not)."""
        self._accounts.pop(account, None)

    def tracked(self) -> tuple[int, int]:
        """(addresses, accounts) with failures on record."""
        self._addresses.expire()
        self._accounts.expire()
        return len(self._addresses), len(self._accounts)

    def _address_expiry(self, _key: str, record: _Failures, _now: float) -> float:
        return record.blocked_until + self._address_window

    def _account_expiry(self, _key: str, record: _Failures, _now: float) -> float:
        return record.last + self._account_window

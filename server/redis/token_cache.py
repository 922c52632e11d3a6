"""Token -> user lookups cached in this node (L1) and Redis (L2); revocations reach every node.

Every HTTP request and every `hello` looks its bearer token up. `GrantCache` answers from L1,
then L2 (`{ns}:grant:{token_hash}`, JSON, until the token expires or `L2_TTL`), then the store,
and fills both. Only grants are cached, never "unknown" (a token just issued elsewhere works at
once). `with_grant_cache(store, grants)` is the store with those lookups in front of it.

`RedisTokenRevocation.confirmed(token_hash)` is the logout's `token_revoked`: it closes this
node's sockets of the token (`TokenIndex.revoke`), drops the L1 entry, replaces the L2 entry by a
tombstone (retried while Redis is away, `L2Writes`) and then tells every other node, which does
the same and answers once done (the control channel's acks); it returns once every live node has
answered, or after `CONFIRM_TIMEOUT`. So when the logout is answered, no node reads another frame
from a socket of the token, nor accepts the token from its L1. A node that does not answer in time
is down, partitioned or slow (counted, logged once): like a lost notification, that leaves it
accepting the token from its L1 for at most `L1_TTL`, and its open sockets of the token open (they
close at the token's expiry); after a reconnect to Redis every L1 entry is dropped. While Redis is
away lookups go to the store, and a logout waits for nobody.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import trio
from cachetools import TTLCache
from coredis import PureToken

from server.chat.token_index import TokenIndex
from server.ops.log_throttle import LogThrottle
from server.redis._link import REDIS_DOWN, RedisFaults, RedisLinkLike, text
from server.redis.control import RedisControlChannel
from server.redis.l2_writes import L2Writes
from storage import AccountStore, Store, TokenGrant, User
from storage.passwords import token_hash

L1_TTL = 30.0  # seconds a grant lives in a node's memory
L2_TTL = 300.0  # at most this long in Redis (less if the token expires sooner)
CONFIRM_TIMEOUT = 1.0  # seconds a logout waits for every live node to have applied it
_KIND = "revoke"
# What L2 holds for a revoked token for L2_TTL: a fill racing the revocation (a store read from
# before it) is written with NX, so it cannot put the grant back.
_REVOKED = "revoked"
_log = logging.getLogger(__name__)


class GrantCache:
    def __init__(
        self,
        link: RedisLinkLike,
        store: AccountStore,
        faults: RedisFaults,
        *,
        l1_ttl: float = L1_TTL,
        l2_ttl: float = L2_TTL,
        maxsize: int = 100_000,
    ) -> None:
        self._link = link
        self._store = store
        self._faults = faults
        self._l1: TTLCache[str, TokenGrant] = TTLCache(maxsize=maxsize, ttl=l1_ttl)
        # Revoked here lately: a lookup that read L2 or the store before the revocation landed
        # must neither answer with the grant nor put it back in L1 once it resumes.
        self._revoked: TTLCache[str, bool] = TTLCache(maxsize=maxsize, ttl=l1_ttl)
        self._l2_ttl_ms = round(l2_ttl * 1000)
        self.hits = 0
        self.misses = 0
        link.on_reconnect(self._l1.clear)

    def key(self, hashed: str) -> str:
        return self._link.key("grant", hashed)

    @property
    def l2_ttl_ms(self) -> int:
        return self._l2_ttl_ms

    async def grant_for_token(self, token: str) -> TokenGrant | None:
        hashed = token_hash(token)
        now_ms = time.time() * 1000
        cached: TokenGrant | str | None = self._l1.get(hashed)
        if cached is None:
            cached = await self._from_l2(hashed)
            if cached == _REVOKED or hashed in self._revoked:
                self.hits += 1
                return None
        if isinstance(cached, TokenGrant):
            if cached.expires_at > now_ms:
                self.hits += 1
                self._l1[hashed] = cached
                return cached
            self.forget(hashed)
        self.misses += 1
        grant = await self._store.grant_for_token(token)
        if grant is None or hashed in self._revoked:
            return None
        self._l1[hashed] = grant
        await self._to_l2(hashed, grant, now_ms)
        return grant

    async def user_for_token(self, token: str) -> User | None:
        grant = await self.grant_for_token(token)
        return None if grant is None else grant.user

    async def revoke_token(self, token: str) -> None:
        """Revoke in the store, then tombstone L2 at once: this node's next lookup of the token
        must not find the grant there (`RedisTokenRevocation` retries it if Redis is away)."""
        await self._store.revoke_token(token)
        hashed = token_hash(token)
        self.revoked(hashed)
        try:
            await self._link.client.set(self.key(hashed), _REVOKED, px=self._l2_ttl_ms)
        except REDIS_DOWN as exc:
            self._faults.failed(exc)

    def forget(self, hashed: str) -> None:
        """Drop the L1 entry (L2's goes through `RedisTokenRevocation`)."""
        self._l1.pop(hashed, None)

    def revoked(self, hashed: str) -> None:
        """The token was revoked: drop it from L1, and keep lookups already under way from
        putting it back (for the L1 TTL; L2's tombstone and the store answer after that)."""
        self._revoked[hashed] = True
        self._l1.pop(hashed, None)

    async def _from_l2(self, hashed: str) -> TokenGrant | str | None:
        try:
            raw = await self._link.client.get(self.key(hashed))
        except REDIS_DOWN as exc:
            self._faults.failed(exc)
            return None
        if raw is None:
            return None
        if text(raw) == _REVOKED:
            return _REVOKED
        user_id, name, expires_at = json.loads(text(raw))
        return TokenGrant(user=User(id=user_id, name=name), expires_at=expires_at)

    async def _to_l2(self, hashed: str, grant: TokenGrant, now_ms: float) -> None:
        ttl_ms = min(self._l2_ttl_ms, int(grant.expires_at - now_ms))
        if ttl_ms <= 0:
            return
        value = json.dumps([grant.user.id, grant.user.name, grant.expires_at])
        try:
            await self._link.client.set(self.key(hashed), value, px=ttl_ms, condition=PureToken.NX)
        except REDIS_DOWN as exc:
            self._faults.failed(exc)
        else:
            self._faults.succeeded()


class RedisTokenRevocation:
    def __init__(
        self,
        tokens: TokenIndex,
        grants: GrantCache,
        control: RedisControlChannel,
        writes: L2Writes,
        *,
        unconfirmed: Callable[[], None] = lambda: None,
        confirm_timeout: float = CONFIRM_TIMEOUT,
    ) -> None:
        self._tokens = tokens
        self._grants = grants
        self._control = control
        self._writes = writes
        self._unconfirmed = unconfirmed
        self._timeout = confirm_timeout
        self._late = LogThrottle(_log, "logout confirmations", first_level=logging.WARNING)
        control.on_control(_KIND, self._heard)

    def revoke(self, token_hash: str, *, ack: str | None = None) -> None:
        """Close the token's sockets here, then on every node; never awaits."""
        self._heard(token_hash)
        self._writes.set(
            self._grants.key(token_hash),
            _REVOKED,
            self._grants.l2_ttl_ms,
            lambda: self._control.publish_control(_KIND, token_hash, ack=ack),
        )

    async def confirmed(self, token_hash: str) -> bool:
        """`revoke`, then wait (at most `confirm_timeout`) until every live node has applied it;
        False (counted, logged once per episode) if one did not in time or Redis is away."""
        with self._control.awaiting_acks() as acks:
            self.revoke(token_hash, ack=acks.request_id)
            live: set[str] | None = None
            with trio.move_on_after(self._timeout):
                try:
                    live = await self._control.live_nodes()
                except REDIS_DOWN:
                    pass  # nobody can be told now (the L2 write is retried, then published)
                else:
                    await acks.wait_for(live)
                    self._late.recovered()
                    return True
        self._unconfirmed()
        missing = "Redis" if live is None else ", ".join(sorted(live - acks.nodes))
        self._late.occurred(
            "late",
            "logout not confirmed within %.1f s by %s (down, partitioned or slow): a node that "
            "missed it accepts the token from its L1 cache for at most %.0f s",
            self._timeout,
            missing,
            L1_TTL,
        )
        return False

    def _heard(self, token_hash: str) -> None:
        self._grants.revoked(token_hash)
        self._tokens.revoke(token_hash)


def with_grant_cache(store: Store, grants: GrantCache) -> Store:
    """`store`, whose token lookups and revocations go through `grants`."""
    return cast(Store, _CachedGrants(store, grants))


class _CachedGrants:
    def __init__(self, store: Store, grants: GrantCache) -> None:
        self._store = store
        self.grant_for_token = grants.grant_for_token
        self.user_for_token = grants.user_for_token
        self.revoke_token = grants.revoke_token

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

"""L2 caches in Redis behind each node's L1: membership and token lookups, changes and
revocations reaching every node, L1 flushed on reconnect. Two "nodes" are two sets of these
objects in one process, each with its own link, sharing one Redis and one SQLite file."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from protocol import CloseCode
from server.chat.connection import ChatConnection, ConnState
from server.chat.token_index import TokenIndex
from server.ops.metrics import Metrics
from server.redis import RedisFaults
from server.redis.control import RedisControlChannel
from server.redis.l2_writes import L2Writes
from server.redis.membership_cache import RedisMemberLookup, RedisMembershipInvalidation
from server.redis.token_cache import GrantCache, RedisTokenRevocation, with_grant_cache
from server.transport.flusher import Flusher
from storage import MembershipCache, Store, TokenGrant, open_store
from storage.passwords import token_hash

from ..connections import chat_connection

ROOM = "lobby"
CONFIRM_TIMEOUT = 0.5  # the logout's bound here (1 s in the server)


@dataclass
class Node:
    link: Any
    lookup: RedisMemberLookup
    l1: MembershipCache
    invalidation: RedisMembershipInvalidation
    grants: GrantCache
    store: Store  # with the grant cache in front
    tokens: TokenIndex
    revocation: RedisTokenRevocation
    control: RedisControlChannel
    metrics: Metrics

    def hears(self, kind: str) -> trio.Event:
        """Set once this node has handled the next `kind` notification from another node."""
        heard = trio.Event()
        self.control.on_control(kind, lambda payload: heard.set())  # runs after the node's
        return heard


@asynccontextmanager
async def _cluster(redis_links: Any, db: Store, count: int) -> AsyncIterator[list[Node]]:
    metrics = Metrics()
    async with AsyncExitStack() as stack:
        links = [await stack.enter_async_context(redis_links()) for _ in range(count)]
        async with trio.open_nursery() as nursery:
            nodes = []
            for i, link in enumerate(links):
                control = RedisControlChannel(
                    link, f"node{i}", RedisFaults("control", metrics.count_redis_error)
                )
                await nursery.start(control.run)
                writes = L2Writes(link, RedisFaults("membership_cache", metrics.count_redis_error))
                await nursery.start(writes.run)
                lookup = RedisMemberLookup(
                    link, db, RedisFaults("membership_cache", metrics.count_redis_error)
                )
                l1 = MembershipCache(lookup, 100, 60.0)
                grants = GrantCache(link, db, RedisFaults("token_cache", metrics.count_redis_error))
                tokens = TokenIndex()
                nodes.append(
                    Node(
                        link,
                        lookup,
                        l1,
                        RedisMembershipInvalidation(l1, link, control, writes),
                        grants,
                        with_grant_cache(db, grants),
                        tokens,
                        RedisTokenRevocation(
                            tokens,
                            grants,
                            control,
                            writes,
                            unconfirmed=metrics.count_logout_unconfirmed,
                            confirm_timeout=CONFIRM_TIMEOUT,
                        ),
                        control,
                        metrics,
                    )
                )
            yield nodes
            nursery.cancel_scope.cancel()
    assert sum(metrics.redis_errors.values()) == 0


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(str(tmp_path / "chat.db"), scrypt_n=2**10) as store:
        yield store


async def test_a_membership_change_on_one_node_reaches_the_other_nodes_l1_and_l2(
    redis_links: Any, db: Store
) -> None:
    user = await db.create_user("alice", "pw")
    await db.create_room(ROOM, user.id)
    with trio.fail_after(10):
        async with _cluster(redis_links, db, 2) as [a, b]:
            assert await b.l1.is_member(ROOM, user.id)  # store -> L2 -> b's L1
            assert (b.lookup.hits, b.lookup.misses) == (0, 1)
            assert await a.l1.is_member(ROOM, user.id)  # a's L1 miss, L2 hit
            assert (a.lookup.hits, a.lookup.misses) == (1, 0)

            heard = b.hears("membership")
            await db.leave_room(ROOM, user.id)
            a.invalidation.changed(ROOM, user.id, False)
            assert not await a.l1.is_member(ROOM, user.id)
            await heard.wait()
            assert not await b.l1.is_member(ROOM, user.id)
            fresh = MembershipCache(b.lookup, 100, 60.0)  # a third node's empty L1: L2 says so
            assert not await fresh.is_member(ROOM, user.id)
            assert b.lookup.misses == 1  # answered by L2, not the store


async def test_l1_is_flushed_when_the_link_reconnects(redis_links: Any, db: Store) -> None:
    user = await db.create_user("alice", "pw")
    await db.create_room(ROOM, user.id)
    token = await db.create_token(user.id, 3600)
    with trio.fail_after(10):
        async with _cluster(redis_links, db, 1) as [a]:
            assert await a.l1.is_member(ROOM, user.id)
            assert await a.store.user_for_token(token) == user
            await a.link.client.delete([a.link.key("member", str(user.id), ROOM)])
            await db.leave_room(ROOM, user.id)  # a change whose notification was lost
            await db.revoke_token(token)
            await a.link.client.delete([a.grants.key(token_hash(token))])
            assert await a.l1.is_member(ROOM, user.id)  # L1: stale until its TTL...
            assert await a.store.user_for_token(token) == user
            a.link.reconnected()  # ...or the next reconnect
            assert not await a.l1.is_member(ROOM, user.id)
            assert await a.store.user_for_token(token) is None


@pytest.fixture
async def flusher() -> AsyncIterator[Flusher]:
    flusher = Flusher()
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        yield flusher
        nursery.cancel_scope.cancel()


@contextmanager
def _socket_of(flusher: Flusher, tokens: TokenIndex, token: str) -> Iterator[ChatConnection]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        conn = chat_connection(ours, flusher, 1 << 20)
        conn.token_hash = token_hash(token)
        conn.set_state(ConnState.OPEN)
        tokens.track(conn)
        yield conn


async def test_a_logout_on_one_node_closes_the_tokens_sockets_and_cache_entries_on_another(
    redis_links: Any, db: Store, flusher: Flusher
) -> None:
    user = await db.create_user("alice", "pw")
    token = await db.create_token(user.id, 3600)
    with trio.fail_after(10):
        async with _cluster(redis_links, db, 2) as [a, b]:
            grant = await b.store.grant_for_token(token)  # cached on b (L1) and in L2
            assert grant is not None and grant.user == user
            assert await a.store.user_for_token(token) == user
            assert a.grants.hits == 1  # from L2
            with _socket_of(flusher, b.tokens, token) as on_b:
                heard = b.hears("revoke")
                await a.store.revoke_token(token)  # what POST /api/logout does on node a
                a.revocation.revoke(token_hash(token))
                assert await a.store.user_for_token(token) is None
                await heard.wait()
                assert on_b.state is ConnState.CLOSING
                assert on_b.close_code == CloseCode.UNAUTHENTICATED
                assert await b.store.user_for_token(token) is None  # L1 dropped, L2 tombstone


async def test_a_confirmed_revocation_returns_once_every_live_node_closed_the_sockets(
    redis_links: Any, db: Store, flusher: Flusher
) -> None:
    user = await db.create_user("alice", "pw")
    token = await db.create_token(user.id, 3600)
    with trio.fail_after(10):
        async with _cluster(redis_links, db, 3) as [a, b, c]:
            assert await b.store.user_for_token(token) == user  # in b's L1
            with (
                _socket_of(flusher, b.tokens, token) as on_b,
                _socket_of(flusher, c.tokens, token) as on_c,
            ):
                await a.store.revoke_token(token)
                assert await a.revocation.confirmed(token_hash(token))
                # No waiting for a notification: done on every node when it returned.
                assert on_b.state is ConnState.CLOSING and on_c.state is ConnState.CLOSING
                assert on_b.close_reason == "token revoked"
                assert await b.store.user_for_token(token) is None
            assert a.metrics.logouts_unconfirmed == 0


async def test_a_live_node_that_does_not_answer_delays_the_revocation_by_the_bound_only(
    redis_links: Any, db: Store
) -> None:
    user = await db.create_user("alice", "pw")
    token = await db.create_token(user.id, 3600)
    with trio.fail_after(10):
        async with _cluster(redis_links, db, 2) as [a, b]:
            # A node that crashed a moment ago: live in the registry, deaf on the channel.
            nodes = a.link.key("nodes")
            now_ms = (await a.link.client.time()).timestamp() * 1000
            await a.link.client.zadd(nodes, {"crashed": now_ms + 60_000})
            heard = b.hears("revoke")
            await a.store.revoke_token(token)
            started = trio.current_time()
            assert not await a.revocation.confirmed(token_hash(token))
            took = trio.current_time() - started
            assert CONFIRM_TIMEOUT <= took < CONFIRM_TIMEOUT + 0.5
            assert heard.is_set()  # b applied it all the same
            assert a.metrics.logouts_unconfirmed == 1
            await a.link.client.zrem(nodes, ["crashed"])  # its entry ran out
            assert await a.revocation.confirmed(token_hash(token))
            assert a.metrics.logouts_unconfirmed == 1


class _PausedReads:
    """The real store, whose token lookups pause (after reading) until `resume` is set."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.reading = trio.Event()
        self.resume = trio.Event()

    async def grant_for_token(self, token: str) -> TokenGrant | None:
        grant = await self._store.grant_for_token(token)
        self.reading.set()
        await self.resume.wait()
        return grant


async def test_a_lookup_under_way_when_the_revocation_lands_neither_answers_nor_refills_l1(
    redis_links: Any, db: Store
) -> None:
    user = await db.create_user("alice", "pw")
    token = await db.create_token(user.id, 3600)
    metrics = Metrics()
    with trio.fail_after(10):
        async with redis_links() as link:
            reads = _PausedReads(db)
            faults = RedisFaults("token_cache", metrics.count_redis_error)
            grants = GrantCache(link, reads, faults)  # type: ignore[arg-type]
            answers: list[TokenGrant | None] = []

            async def look_up() -> None:
                answers.append(await grants.grant_for_token(token))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(look_up)
                await reads.reading.wait()  # it read the grant before the logout...
                await db.revoke_token(token)
                grants.revoked(token_hash(token))  # ...which lands here meanwhile
                reads.resume.set()
            assert answers == [None]
            assert grants.misses == 1
            assert await grants.grant_for_token(token) is None  # not put back in L1 (nor L2)
            assert grants.misses == 1  # known revoked here: not even asked of the store

"""The bus's own link to Redis (server/redis/link.py) against a redis-server of the test's own:
a loss while a publish is in flight, and a Redis that stops answering without closing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import coredis
import pytest
import trio
import trio.testing
from coredis.tokens import PureToken

from server.redis.link import RedisLink, RedisUnavailable

from .conftest import OwnRedis

CHANNEL = b"t:{0}:room"


class Subscriptions:
    """Records when the link's subscription is in force (after each (re)connect)."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = trio.Event()

    def subscribed(self, channel: bytes) -> None:
        assert channel == CHANNEL
        self.count += 1
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        while self.count < count:
            await self.changed.wait()


Running = tuple[RedisLink, Subscriptions]


@asynccontextmanager
async def _link(
    redis: OwnRedis, **options: float
) -> AsyncIterator[tuple[RedisLink, Subscriptions]]:
    """A running link to `redis`, subscribed to CHANNEL (returned once that is in force)."""
    link = RedisLink(f"redis://127.0.0.1:{redis.port}/0", namespace="t", **options)
    subs = Subscriptions()
    link.on_message(lambda channel, payload: None, subs.subscribed)
    link.subscribe(CHANNEL)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        await subs.wait_for(1)
        yield link, subs
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _admin(redis: OwnRedis) -> AsyncIterator[coredis.Redis[bytes]]:
    client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=redis.port)
    async with client:
        yield client


async def test_publish_in_flight_when_the_session_ends_raises_unavailable(
    own_redis: OwnRedis,
) -> None:
    """The subscriber sees Redis go and the session closes the publish connection while a
    publish waits for its reply: the publisher gets RedisUnavailable (it used to get trio's
    ClosedResourceError, which crashed the bus's sender and with it the whole server)."""
    with trio.fail_after(10):
        async with _link(own_redis) as (link, subs), _admin(own_redis) as admin:
            await admin.client_pause(5000, PureToken.WRITE)  # SPUBLISH waits
            outcome: list[Exception] = []

            async def publish() -> None:
                try:
                    await link.publish([(CHANNEL, b"hello")])
                except Exception as exc:  # recorded for the assertion below
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish)
                await trio.testing.wait_all_tasks_blocked()  # the publish awaits its reply
                await admin.client_kill(type_=PureToken.PUBSUB)
            assert len(outcome) == 1 and isinstance(outcome[0], RedisUnavailable), outcome
            await admin.client_unpause()
            await subs.wait_for(2)  # reconnected by itself, subscription in force again
            assert link.reconnects == 1
            await link.publish([(CHANNEL, b"again")])


async def test_a_redis_that_stops_answering_is_noticed_within_the_ping_bound(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP keeps the TCP connections open: only the keepalive can tell. The link is down
    within interval + timeout, logs one line for the outage, and is back by itself after
    SIGCONT (subscription in force again)."""
    interval, timeout = 0.2, 0.4
    with trio.fail_after(10):
        async with _link(own_redis, ping_interval=interval, ping_timeout=timeout) as (link, subs):
            caplog.clear()
            own_redis.pause()
            try:
                paused_at = trio.current_time()
                while link.healthy:  # noqa: ASYNC110 (the link has no event for this)
                    await trio.sleep(0.02)
                noticed = trio.current_time() - paused_at
                with pytest.raises(RedisUnavailable):
                    await link.publish([(CHANNEL, b"while paused")])
                # Reconnect attempts: TCP connects to a stopped Redis, but its PING goes
                # unanswered, so the link must not count as up.
                await trio.sleep(timeout * 3)
                assert not link.healthy
            finally:
                own_redis.resume()
            await subs.wait_for(2)
            assert link.healthy
            assert link.timeouts == 1 and link.reconnects == 1
            await link.publish([(CHANNEL, b"after")])
    assert noticed <= interval + timeout + 0.3, noticed
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["redis connection lost"], warnings

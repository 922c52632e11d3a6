"""The per-user rate limit holds across nodes sharing one Redis, and falls back to the local
bucket while Redis is away."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from server.chat.ratelimit import UserRateLimiter
from server.ops.metrics import Metrics
from server.redis import RedisFaults
from server.redis.ratelimit import SharedRateLimiter, bucket_key

RATE, BURST = 50.0, 10.0
USER = 7


async def _flood(limiters: list[Any], seconds: float) -> tuple[int, float]:
    """Every limiter is asked every 2 ms for `seconds`: (allowed in total, seconds taken)."""
    allowed = 0
    started = trio.current_time()
    while (now := trio.current_time()) - started < seconds:
        for limiter in limiters:
            allowed += limiter.allow(USER, now)
        await trio.sleep(0.002)
    return allowed, trio.current_time() - started


async def test_a_user_on_three_nodes_gets_the_configured_rate_not_three_times_it(
    redis_links: Any,
) -> None:
    metrics = Metrics()
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            links = [await stack.enter_async_context(redis_links()) for _ in range(3)]
            async with trio.open_nursery() as nursery:
                nodes = []
                for i, link in enumerate(links):
                    faults = RedisFaults("ratelimit", metrics.count_redis_error)
                    limiter = SharedRateLimiter(link, f"node{i}", RATE, BURST, faults)
                    await nursery.start(limiter.run)
                    nodes.append(limiter)
                shared, seconds = await _flood(nodes, 1.5)
                nursery.cancel_scope.cancel()
    local = [UserRateLimiter(RATE, BURST) for _ in range(3)]
    with trio.fail_after(30):
        alone, alone_seconds = await _flood(local, 1.5)
    configured = BURST + RATE * seconds
    # Each node may spend its local burst before its first report: at most 2 bursts extra.
    assert 0.7 * RATE * seconds <= shared <= configured + 2 * BURST, (shared, configured)
    assert alone >= 2.5 * (BURST + RATE * alone_seconds) * 0.9  # what three local limits give
    assert metrics.redis_errors["ratelimit"] == 0


# coredis 6.9 leaves the anyio memory streams of a failed connection attempt to the garbage
# collector (ResourceWarning "Unclosed <MemoryObject...>"): not ours to close.
@pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")
async def test_the_local_bucket_limits_while_redis_is_away_and_sharing_resumes_after(
    redis_links: Any, own_redis: Any
) -> None:
    metrics = Metrics()
    with trio.fail_after(30):
        async with redis_links(port=own_redis.port) as link, trio.open_nursery() as nursery:
            faults = RedisFaults("ratelimit", metrics.count_redis_error)
            limiter = SharedRateLimiter(link, "node0", RATE, BURST, faults)
            await nursery.start(limiter.run)
            own_redis.stop()
            allowed, seconds = await _flood([limiter], 1.0)
            # The local bucket alone: the burst, then the rate (the rounding of 2 ms steps).
            assert 0.8 * (BURST + RATE * seconds) <= allowed <= BURST + RATE * seconds + 1
            assert metrics.redis_errors["ratelimit"] > 0
            own_redis.start()
            errors = metrics.redis_errors["ratelimit"]
            assert limiter.allow(USER, trio.current_time() + 1.0)
            await limiter.reconcile()
            assert metrics.redis_errors["ratelimit"] == errors
            tokens = await link.client.hget(bucket_key(link, USER), "tokens")
            assert tokens is not None and float(tokens) < BURST
            nursery.cancel_scope.cancel()

"""The control channel delivers to other nodes, not back to its sender, and resubscribes by
itself after Redis was away."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from server.ops.metrics import Metrics
from server.redis import RedisFaults
from server.redis.control import RedisControlChannel


@pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")
async def test_notifications_reach_other_nodes_and_resume_after_redis_returns(
    redis_links: Any, own_redis: Any
) -> None:
    metrics = Metrics()
    heard: dict[str, list[str]] = {"a": [], "b": []}
    got = {"a": trio.Event(), "b": trio.Event()}

    def on(name: str) -> Any:
        def handler(payload: str) -> None:
            heard[name].append(payload)
            got[name].set()

        return handler

    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            links = [
                await stack.enter_async_context(redis_links(port=own_redis.port)) for _ in "ab"
            ]
            async with trio.open_nursery() as nursery:
                channels = {}
                for name, link in zip("ab", links, strict=True):
                    faults = RedisFaults("control", metrics.count_redis_error)
                    channel = RedisControlChannel(link, name, faults)
                    channel.on_control("ping", on(name))
                    await nursery.start(channel.run)
                    channels[name] = channel
                channels["a"].publish_control("ping", "1")
                await got["b"].wait()
                assert heard == {"a": [], "b": ["1"]}

                own_redis.stop()
                channels["a"].publish_control("ping", "lost")  # at most once: dropped
                own_redis.start()
                got["b"] = trio.Event()
                while not got["b"].is_set():  # resubscribed? publish until b hears one
                    channels["a"].publish_control("ping", "2")
                    with trio.move_on_after(0.2):
                        await got["b"].wait()
                assert heard["b"][0] == "1" and set(heard["b"][1:]) == {"2"}
                assert heard["a"] == []
                assert metrics.redis_errors["control"] > 0
                nursery.cancel_scope.cancel()

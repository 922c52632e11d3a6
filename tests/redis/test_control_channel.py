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


async def _redis_time_ms(link: Any) -> int:
    return int((await link.client.time()).timestamp() * 1000)


async def test_a_notification_with_ack_is_answered_by_each_node_after_its_handlers_ran(
    redis_links: Any,
) -> None:
    metrics = Metrics()
    applied: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    with trio.fail_after(10):
        async with AsyncExitStack() as stack:
            links = [await stack.enter_async_context(redis_links()) for _ in "abc"]
            async with trio.open_nursery() as nursery:
                channels: dict[str, RedisControlChannel] = {}
                scopes: dict[str, trio.CancelScope] = {}
                stopped: dict[str, trio.Event] = {}
                for name, link in zip("abc", links, strict=True):
                    faults = RedisFaults("control", metrics.count_redis_error)
                    channel = RedisControlChannel(link, name, faults)
                    channel.on_control("revoke", applied[name].append)
                    scopes[name], stopped[name] = trio.CancelScope(), trio.Event()

                    async def run(
                        channel: RedisControlChannel,
                        scope: trio.CancelScope,
                        done: trio.Event,
                        *,
                        task_status: trio.TaskStatus[None],
                    ) -> None:
                        with scope:
                            await channel.run(task_status=task_status)
                        done.set()

                    await nursery.start(run, channel, scopes[name], stopped[name])
                    channels[name] = channel
                a = channels["a"]
                assert await a.live_nodes() == {"b", "c"}  # registered once started

                with a.awaiting_acks() as acks:
                    a.publish_control("revoke", "t1", ack=acks.request_id)
                    await acks.wait_for({"b", "c"})
                    # Each answered after its handler: what it applied is applied.
                    assert applied == {"a": [], "b": ["t1"], "c": ["t1"]}
                    assert acks.nodes == {"b", "c"}

                scopes["c"].cancel()  # c stops: it leaves the live set as it ends
                await stopped["c"].wait()
                assert await a.live_nodes() == {"b"}

                # An entry that ran out (a crashed node's, after its TTL) is not live.
                now = await _redis_time_ms(links[0])
                await links[0].client.zadd(links[0].key("nodes"), {"ghost": now - 1})
                assert await a.live_nodes() == {"b"}
                nursery.cancel_scope.cancel()
    assert sum(metrics.redis_errors.values()) == 0

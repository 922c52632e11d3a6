"""`build_shared_state` wires the Redis parts of a node so that they run and work together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from server.chat.token_index import TokenIndex
from server.config import Config
from server.ops.metrics import Metrics
from server.redis.shared_state import build_member_lookup, build_shared_state
from storage import MembershipCache, open_store


class _Bus:
    def __init__(self) -> None:
        self.presence: list[bytes] = []

    def publish_presence(self, room: str, payload: bytes, exclude: int) -> None:
        self.presence.append(payload)


async def test_a_built_node_runs_its_parts_and_answers_through_redis(
    redis_links: Any, tmp_path: Path
) -> None:
    metrics = Metrics()
    with trio.fail_after(10):
        async with (
            open_store(str(tmp_path / "chat.db"), scrypt_n=2**10) as db,
            redis_links() as link,
        ):
            user = await db.create_user("alice", "pw")
            await db.create_room("lobby", user.id)
            token = await db.create_token(user.id, 3600)
            lookup = build_member_lookup(link, db, metrics.count_redis_error)
            membership = MembershipCache(lookup, 100, 60.0)
            bus = _Bus()
            shared = build_shared_state(
                link,
                node_id="node0",
                bus=bus,  # type: ignore[arg-type]
                store=db,
                membership=membership,
                tokens=TokenIndex(),
                config=Config(),
                count_error=metrics.count_redis_error,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(shared.run)
                assert await shared.store.user_for_token(token) == user
                assert await membership.is_member("lobby", user.id)
                shared.presence.arrived("lobby", "alice", 1)
                await shared.presence.sync()
                assert await shared.presence.online("lobby") == ["alice"]
                assert shared.limiter.allow(user.id, trio.current_time())
                shared.invalidation.changed("lobby", user.id, False)
                assert not await membership.is_member("lobby", user.id)
                nursery.cancel_scope.cancel()
    assert len(bus.presence) == 1
    assert sum(metrics.redis_errors.values()) == 0

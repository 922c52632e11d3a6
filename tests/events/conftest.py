"""The machine's Redis for the event-stream tests, each under a namespace of its own (deleted
after). Without Redis they skip, except under CI=true, where a missing Redis fails them."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator

import coredis
import pytest

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def redis() -> AsyncIterator[tuple[coredis.Redis[bytes], str]]:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        if os.environ.get("CI") == "true":
            pytest.fail("no Redis at 127.0.0.1:6379 (CI=true: Redis is required)")
        pytest.skip("no Redis at 127.0.0.1:6379")
    namespace = "evt" + secrets.token_hex(4)
    client: coredis.Redis[bytes] = coredis.Redis.from_url(URL, decode_responses=False)
    async with client:
        yield client, namespace
        keys = [k async for k in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(keys)

"""`hibiki events tail` as a real process: it follows the streams with its consumer group and
prints each new (room, seq) once, as a JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import coredis
import trio

from protocol import Message
from server.events import partition_of, stream_key
from server.events.stream import entry_fields

from .conftest import URL

ROOT = Path(__file__).resolve().parents[2]


async def test_tail_prints_each_room_seq_once_as_json_lines(
    redis: tuple[coredis.Redis[bytes], str],
) -> None:
    client, namespace = redis
    first = Message("general", 1, 1, "ann", "hello", 1000, "c1")
    second = Message("general", 2, 2, "bob", "again", 1001, None)
    key = stream_key(namespace, partition_of("general", 2))
    for message in (first, first, second):  # a re-append of seq 1
        await client.xadd(key, entry_fields(message))  # type: ignore[arg-type]
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "HIBIKI_EVENTS_REDIS_URL": URL,
        "HIBIKI_BUS_NAMESPACE": namespace,
        "HIBIKI_STREAM_PARTITIONS": "2",
    }
    cmd = [sys.executable, "-m", "server.cli", "events", "tail", "--group", "t"]
    async with trio.open_nursery() as nursery:
        run = partial(trio.run_process, cmd, env=env, stdout=subprocess.PIPE, check=False)
        process: trio.Process = await nursery.start(run)
        assert process.stdout is not None
        out = b""
        with trio.fail_after(20):
            while out.count(b"\n") < 2:
                chunk = await process.stdout.receive_some()
                assert chunk, out
                out += chunk
        process.kill()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [(e["room"], e["seq"], e["text"]) for e in lines] == [
        ("general", 1, "hello"),
        ("general", 2, "again"),
    ]
    assert lines[0] == {
        "type": "MESSAGE_CREATED",
        "id": 1,
        "room": "general",
        "seq": 1,
        "user": "ann",
        "text": "hello",
        "client_id": "c1",
        "ts": 1000,
    }

"""The MESSAGE_CREATED event stream on Redis Streams (docs/events.md).

`EventAppender` is the writer's after-commit sink that appends, at least once across crashes;
`EventConsumer` follows the streams with a consumer group (`hibiki events tail`), and
`SearchIndex` is the consumer shipped with hibiki (`hibiki events index`).
"""

from __future__ import annotations

import functools

from server.config import Config
from server.events.appender import EventAppender
from server.events.consumer import EventConsumer
from server.events.search_index import SearchIndex
from server.events.sharded import ShardedEventAppender
from server.events.stream import (
    MESSAGE_CREATED,
    Deduper,
    MessageCreated,
    StreamEvent,
    partition_of,
    stream_key,
)
from storage import EventOutbox
from storage.routing import ShardOutboxes

__all__ = [
    "MESSAGE_CREATED",
    "Deduper",
    "EventAppender",
    "EventConsumer",
    "MessageCreated",
    "SearchIndex",
    "ShardedEventAppender",
    "StreamAppender",
    "StreamEvent",
    "build_event_appender",
    "partition_of",
    "stream_key",
]


StreamAppender = EventAppender | ShardedEventAppender


def build_event_appender(
    config: Config, outbox: EventOutbox | ShardOutboxes
) -> StreamAppender | None:
    """The appender `[events]` asks for, or None when the stream is off: over a sharded store's
    outboxes, one elected appender per shard database (server/events/sharded.py)."""
    if not config.events.events_enabled:
        return None
    make = functools.partial(
        EventAppender,
        config.events_url,
        namespace=config.bus.bus_namespace,
        partitions=config.events.stream_partitions,
        maxlen=config.events.stream_maxlen,
        append_timeout=config.events.events_append_timeout,
    )
    if isinstance(outbox, ShardOutboxes):
        return ShardedEventAppender(outbox, make)
    return make(outbox)

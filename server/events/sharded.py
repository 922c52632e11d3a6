"""The event stream over sharded message storage: one elected appender per shard database.

With `[storage] shards` each shard database is an outbox of its own (storage/routing/
shard_events.py: positions, cursors and an appender lease per database), so every node runs one
`EventAppender` per shard database, each electing its leader on that database alone: the lead
of different shards may sit on different nodes. A room's messages all commit on one database at
a time, so one appender appends them in seq order; across a move the two databases' appenders
hand over as `carry_stream` describes (docs/events.md, "With shards").

`ShardedEventAppender` is the writer's one after-commit sink: a commit wakes the appender of the
database the room is on now. It adds up the appenders' figures for /metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from protocol import Message
from server.events.appender import EventAppender
from storage.routing import ShardOutboxes


class ShardedEventAppender:
    """`CommitSink` over one `EventAppender` per shard database (see the module docstring);
    `make(outbox, read_lag)` builds each (the first one reads the consumer groups' lag)."""

    def __init__(self, outboxes: ShardOutboxes, make: Callable[..., EventAppender]) -> None:
        self._outboxes = outboxes
        self.appenders = {
            target: make(outbox, read_lag=i == 0)
            for i, (target, outbox) in enumerate(sorted(outboxes.outboxes.items()))
        }

    def committed(self, messages: Sequence[Message]) -> None:
        """Wake the appender of each database these rooms are on now (after a move switched a
        room, the old home's appender finds nothing new, and polls anyway)."""
        woken: dict[str, list[Message]] = {}
        for message in messages:
            woken.setdefault(self._outboxes.home_of(message.room), []).append(message)
        for target, part in woken.items():
            appender = self.appenders.get(target)
            if appender is not None:
                appender.committed(part)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every appender until cancelled; started once each is (its first election over)."""
        async with trio.open_nursery() as nursery:
            for appender in self.appenders.values():
                await nursery.start(appender.run)
            task_status.started()

    # Figures for /metrics (server/ops/metrics.py): the sums over the shard databases.
    @property
    def leader(self) -> bool:
        """Whether this process leads the appending of at least one shard database."""
        return any(a.leader for a in self.appenders.values())

    @property
    def leading(self) -> int:
        """How many shard databases this process appends for now."""
        return sum(a.leader for a in self.appenders.values())

    @property
    def appended(self) -> int:
        return sum(a.appended for a in self.appenders.values())

    @property
    def recovered(self) -> int:
        return sum(a.recovered for a in self.appenders.values())

    @property
    def committed_seen(self) -> int:
        return sum(a.committed_seen for a in self.appenders.values())

    @property
    def outbox_depth(self) -> int:
        return sum(a.outbox_depth for a in self.appenders.values())

    @property
    def consumer_lag(self) -> dict[str, int]:
        lags = [a.consumer_lag for a in self.appenders.values() if a.consumer_lag]
        return lags[0] if lags else {}

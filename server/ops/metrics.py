"""Prometheus metrics whose updates cost the hot path one integer addition.

Code on a hot path bumps plain attributes of one `Metrics` object (`metrics.deliveries += n`,
`metrics.batch_size.observe(len(batch))`); nothing touches prometheus_client until a scrape,
when `_Collector` (server.ops._exposition) turns those numbers, and a few gauges read from live
state (connections, writer queue, outbound bytes), into metric families. prometheus_client's own
Counter and Histogram take a lock on every update; these take none: every update and every scrape
runs on the trio thread.

Each `Metrics` owns its `CollectorRegistry` (no global registry), so two servers in one process
(tests, benchmarks) never share a series. docs/operations.md describes every metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, Protocol

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from server.ops._exposition import _Collector
from server.ops._histogram import BATCH_BUCKETS as BATCH_BUCKETS
from server.ops._histogram import DB_BUCKETS as DB_BUCKETS
from server.ops._histogram import LATENCY_BUCKETS as LATENCY_BUCKETS
from server.ops._histogram import Histogram as Histogram
from server.ops._store_timing import query_types as query_types
from server.ops._store_timing import timed_store as timed_store

if TYPE_CHECKING:
    from storage.routing import ReplicaRouter

# Why the listener refused a connection (server.transport.address_limits), the counter's labels.
RefusalReason = Literal["per_address", "pending_per_address"]
REFUSAL_REASONS: tuple[RefusalReason, ...] = ("per_address", "pending_per_address")

# Text format 0.0.4: what every Prometheus version scrapes (our names need nothing newer).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLOSE_REASONS = (
    "client_close",
    "shutdown",
    "stale",
    "slow_consumer",
    "protocol_error",
    "unauthenticated",
    "transport_error",
    "internal",
    "unknown",
)
LOGIN_THROTTLE_LIMITS = ("address", "account", "queue")
# The parts of the shared state in Redis (server.redis), the labels of `hibiki_redis_errors_total`.
REDIS_PARTS = ("presence", "ratelimit", "membership_cache", "token_cache", "control")
_CLOSE_REASON_BY_CODE = {
    1000: "client_close",
    1002: "protocol_error",
    1006: "transport_error",  # the socket broke: no close frame either way
    1007: "protocol_error",
    1008: "protocol_error",  # too many protocol errors
    1009: "protocol_error",
    1011: "internal",
    4001: "unauthenticated",
    4003: "stale",
    4008: "slow_consumer",
}


def close_label(code: int | None, draining: bool, *, by_peer: bool = False) -> str:
    """The `reason` label of a closed connection, from its close code.

    A close the peer started is the client's whatever its code: a client closing with 1011 or
    4008 must not trip the alerts on our own internal errors or slow consumers.
    """
    if by_peer:
        return "client_close"
    if code is None:
        return "shutdown" if draining else "unknown"
    if code == 1001:  # going away: ours at shutdown, or the peer's EOF
        return "shutdown" if draining else "client_close"
    return _CLOSE_REASON_BY_CODE.get(code, "client_close")  # other codes are the peer's


class _Buffered(Protocol):
    @property
    def pending_bytes(self) -> int: ...


class _Connections(Protocol):
    def __len__(self) -> int: ...

    def open_sockets(self) -> int: ...

    def __iter__(self) -> Iterator[_Buffered]: ...


class _Hub(Protocol):
    @property
    def deliveries(self) -> int: ...

    @property
    def gaps_detected(self) -> int: ...

    @property
    def messages_backfilled(self) -> int: ...


class _Bus(Protocol):
    published: int
    received: int
    lag_seconds: Histogram

    @property
    def reconnects(self) -> int: ...

    @property
    def timeouts(self) -> int: ...


class _Events(Protocol):
    @property
    def leader(self) -> bool: ...
    @property
    def appended(self) -> int: ...
    @property
    def recovered(self) -> int: ...
    @property
    def consumer_lag(self) -> dict[str, int]: ...
    @property
    def outbox_depth(self) -> int: ...


class _SqliteCommits(Protocol):
    on_loop: int
    on_thread: int
    pauses: int
    checkpoints: int


class _Flusher(Protocol):
    @property
    def bytes_sent(self) -> int: ...

    @property
    def blocked_writers(self) -> int: ...


class _Queue(Protocol):
    def queue_depth(self) -> int: ...


class _CacheStats(Protocol):
    @property
    def hits(self) -> int: ...

    @property
    def misses(self) -> int: ...


class Metrics:
    """Every number the server exports. Attributes are the hooks; see docs/operations.md."""

    def __init__(self, server_id: str = "") -> None:
        self.server_id = server_id
        # Counters, bumped in place where the event happens.
        self.messages = 0  # messages stored (not re-sent duplicates): writer, HTTP import
        self.rate_limited = 0  # requests refused by the per-user rate limit
        self.auth_failures_password = 0  # login with a wrong name or password
        self.auth_failures_token = 0  # missing, unknown or expired token (HTTP or hello)
        self.login_throttled = dict.fromkeys(LOGIN_THROTTLE_LIMITS, 0)  # 429s by limit
        self.redis_errors = dict.fromkeys(REDIS_PARTS, 0)  # Redis unreachable, by part
        self.logouts_unconfirmed = 0  # a live node did not confirm a logout within the bound
        self.connections_opened = 0
        self.connections_closed = dict.fromkeys(CLOSE_REASONS, 0)
        self.writer_commit_failures = 0
        self.accept_errors = 0  # failed accept() calls (EMFILE at the descriptor limit, ...)
        self.connections_refused = dict.fromkeys(REFUSAL_REASONS, 0)  # per-address caps
        # Histograms.
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.commit_seconds = Histogram(LATENCY_BUCKETS)
        self.fanout_seconds = Histogram(LATENCY_BUCKETS)
        self.send_latency_seconds = Histogram(LATENCY_BUCKETS)
        self.db_query_seconds: dict[str, Histogram] = {}
        # With [storage] shards, by shard database (`host:port/dbname`): each shard's part of a
        # writer batch (server/persist/shard_commit.py), created at the shard's first part.
        self.shard_commit_seconds: dict[str, Histogram] = {}
        self.shard_commit_failures: dict[str, int] = {}
        # Live state read at scrape time (see `watch`).
        self._connections: _Connections | None = None
        self._hub: _Hub | None = None
        self._flusher: _Flusher | None = None
        self._writer: _Queue | None = None
        self._writer_capacity = 0
        self._caches: dict[str, _CacheStats] = {}
        self._bus: _Bus | None = None
        self._replicas: ReplicaRouter | None = None
        self._events: _Events | None = None
        self._sqlite: _SqliteCommits | None = None
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))

    def watch(
        self,
        *,
        connections: _Connections,
        hub: _Hub,
        flusher: _Flusher,
        writer: _Queue,
        writer_capacity: int,
        caches: dict[str, _CacheStats],
    ) -> None:
        """Name the live objects whose own counters and state are read at scrape time."""
        self._connections = connections
        self._hub = hub
        self._flusher = flusher
        self._writer = writer
        self._writer_capacity = writer_capacity
        self._caches = dict(caches)

    def watch_bus(self, bus: _Bus) -> None:
        """The bus between processes (server.redis), whose counters are read at scrape time."""
        self._bus = bus

    def watch_replicas(self, router: ReplicaRouter) -> None:
        """The read-replica router (storage.routing), whose state is read at scrape time."""
        self._replicas = router

    def watch_events(self, events: _Events) -> None:
        """The event-stream appender (server/events), whose counters are read at scrape time."""
        self._events = events

    def watch_sqlite(self, commits: _SqliteCommits) -> None:
        """The SQLite store's commit counters (storage/sqlite/_loop_commit.LoopCommits)."""
        self._sqlite = commits

    def count_auth_failure(self, kind: str) -> None:
        """`kind` is "password" (login) or "token" (bearer token or hello)."""
        if kind == "password":
            self.auth_failures_password += 1
        else:
            self.auth_failures_token += 1

    def count_login_throttled(self, limit: str) -> None:
        """A login or registration refused with 429; `limit` is one of LOGIN_THROTTLE_LIMITS."""
        self.login_throttled[limit] += 1

    def count_redis_error(self, part: str) -> None:
        """A shared-state part (one of REDIS_PARTS) could not reach Redis and fell back."""
        self.redis_errors[part] += 1

    def count_logout_unconfirmed(self) -> None:
        """A logout answered before every live node confirmed it had applied the revocation."""
        self.logouts_unconfirmed += 1

    def exposition(self) -> tuple[bytes, str]:
        """The body and content type of a `GET /metrics` response."""
        return generate_latest(self.registry), CONTENT_TYPE

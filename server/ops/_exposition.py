"""The scrape side of `Metrics`: its numbers and the live state it watches, as metric families."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from server.ops._histogram import LATENCY_BUCKETS, Histogram
from storage.routing import FALLBACK_REASONS

if TYPE_CHECKING:
    from server.ops.metrics import Metrics, _Bus, _Events
    from storage.routing import ReplicaRouter


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._m
        yield from _server_metrics(m)
        yield from _hub_metrics(m)
        yield from _bus_metrics(m._bus)
        yield from _writer_metrics(m)
        yield from _outbound_metrics(m)
        yield from _connection_metrics(m)
        yield from _cache_metrics(m)
        yield from _auth_metrics(m)
        yield from _replica_metrics(m._replicas)
        yield from _event_metrics(m._events)


def _server_metrics(m: Metrics) -> Iterator[Metric]:
    """The seed's series, labelled by server_id, and the store timings."""
    sid = [m.server_id]
    conns = m._connections
    active = conns.open_sockets() if conns is not None else 0
    yield _gauge("websocket_active_connections", "Open WebSocket connections.", active, sid)
    yield _counter(
        "messages", "Messages stored (a re-sent client_id is not counted).", m.messages, sid
    )
    db = HistogramMetricFamily(
        "db_query_duration_seconds", "Store call duration by call.", labels=["query_type"]
    )
    for query_type, hist in sorted(m.db_query_seconds.items()):
        db.add_metric([query_type], hist.cumulative(), hist.sum)
    yield db


def _hub_metrics(m: Metrics) -> Iterator[Metric]:
    deliveries = m._hub.deliveries if m._hub is not None else 0
    yield _counter("hibiki_deliveries", "Frames queued to room subscribers.", deliveries)
    hub = m._hub
    yield _counter(
        "hibiki_seq_gaps_detected",
        "Times a room's next message was missing from what the bus delivered.",
        hub.gaps_detected if hub is not None else 0,
    )
    yield _counter(
        "hibiki_messages_backfilled",
        "Messages the bus lost and the store supplied.",
        hub.messages_backfilled if hub is not None else 0,
    )


def _writer_metrics(m: Metrics) -> Iterator[Metric]:
    yield _histogram(
        "hibiki_send_latency_seconds",
        "Send queued to ack queued, oldest message of each writer batch.",
        m.send_latency_seconds,
    )
    yield _histogram(
        "hibiki_fanout_duration_seconds",
        "Publishing and acking one committed writer batch.",
        m.fanout_seconds,
    )
    yield _histogram("hibiki_writer_batch_size", "Messages per group commit.", m.batch_size)
    yield _histogram(
        "hibiki_writer_commit_duration_seconds",
        "Duration of one group commit.",
        m.commit_seconds,
    )
    yield _counter(
        "hibiki_writer_commit_failures",
        "Batches the store failed to commit.",
        m.writer_commit_failures,
    )
    depth = m._writer.queue_depth() if m._writer is not None else 0
    yield _gauge("hibiki_writer_queue_depth", "Sends waiting for the writer.", depth)
    yield _gauge("hibiki_writer_queue_capacity", "Bound of the writer queue.", m._writer_capacity)
    yield from _sqlite_metrics(m)
    yield from _shard_metrics(m)


def _sqlite_metrics(m: Metrics) -> Iterator[Metric]:
    """Where SQLite batches were committed (storage/sqlite/_loop_commit.py); none on PostgreSQL."""
    commits = m._sqlite
    if commits is None:
        return
    where = CounterMetricFamily(
        "hibiki_sqlite_commits",
        "Message batches committed, by thread: the event loop's (lone batches while the writer"
        " thread is idle) or the writer thread's.",
        labels=["thread"],
    )
    where.add_metric(["event_loop"], commits.on_loop)
    where.add_metric(["writer"], commits.on_thread)
    yield where
    yield _counter(
        "hibiki_sqlite_loop_commit_pauses",
        "Commits on the event loop slower than 50 ms, each pausing them for 30 s.",
        commits.pauses,
    )
    yield _counter(
        "hibiki_sqlite_checkpoints",
        "WAL checkpoints run by the writer thread.",
        commits.checkpoints,
    )


def _shard_metrics(m: Metrics) -> Iterator[Metric]:
    """Each shard database's part of the writer's batches (none without [storage] shards)."""
    seconds = HistogramMetricFamily(
        "hibiki_shard_commit_seconds",
        "Duration of one shard's transaction of a writer batch.",
        labels=["shard"],
    )
    for shard, hist in sorted(m.shard_commit_seconds.items()):
        seconds.add_metric([shard], hist.cumulative(), hist.sum)
    failures = CounterMetricFamily(
        "hibiki_shard_commit_failures",
        "Writer batch parts a shard failed to commit (their senders got unavailable).",
        labels=["shard"],
    )
    for shard, count in sorted(m.shard_commit_failures.items()):
        failures.add_metric([shard], count)
    yield from (seconds, failures)


def _outbound_metrics(m: Metrics) -> Iterator[Metric]:
    conns = m._connections
    total = largest = 0
    for conn in conns if conns is not None else ():
        pending = conn.pending_bytes
        total += pending
        largest = max(largest, pending)
    yield _gauge("hibiki_outbound_buffer_bytes", "Backlog bytes of blocked peers.", total)
    yield _gauge("hibiki_outbound_buffer_max_bytes", "Largest one peer's backlog.", largest)
    flusher = m._flusher
    sent = flusher.bytes_sent if flusher is not None else 0
    blocked = flusher.blocked_writers if flusher is not None else 0
    yield _counter("hibiki_websocket_sent_bytes", "Bytes written to WebSockets.", sent)
    yield _gauge("hibiki_blocked_writers", "Peers whose kernel buffer is full.", blocked)


def _connection_metrics(m: Metrics) -> Iterator[Metric]:
    yield _counter(
        "hibiki_connections_opened", "WebSocket connections accepted.", m.connections_opened
    )
    closed = CounterMetricFamily(
        "hibiki_connections_closed",
        "WebSocket connections closed, by reason.",
        labels=["reason"],
    )
    for reason, n in m.connections_closed.items():
        closed.add_metric([reason], n)
    yield closed
    yield _counter("hibiki_rate_limited", "Requests refused by the rate limit.", m.rate_limited)
    yield _counter("hibiki_accept_errors", "Failed accepts (e.g. EMFILE).", m.accept_errors)
    refused = CounterMetricFamily(
        "hibiki_connections_refused",
        "Connections refused with 503 by a per-address cap, by cap.",
        labels=["reason"],
    )
    for reason, n in m.connections_refused.items():
        refused.add_metric([reason], n)
    yield refused


def _cache_metrics(m: Metrics) -> Iterator[Metric]:
    hits = CounterMetricFamily("hibiki_cache_hits", "Cache lookups answered.", labels=["cache"])
    misses = CounterMetricFamily("hibiki_cache_misses", "Cache lookups missed.", labels=["cache"])
    for name, cache in sorted(m._caches.items()):
        hits.add_metric([name], cache.hits)
        misses.add_metric([name], cache.misses)
    yield hits
    yield misses


def _auth_metrics(m: Metrics) -> Iterator[Metric]:
    """Refused credentials, throttled logins, and the Redis fallbacks."""
    auth = CounterMetricFamily("hibiki_auth_failures", "Refused credentials.", labels=["kind"])
    auth.add_metric(["password"], m.auth_failures_password)
    auth.add_metric(["token"], m.auth_failures_token)
    yield auth
    throttled = CounterMetricFamily(
        "hibiki_login_throttled",
        "Logins and registrations refused with 429, by limit.",
        labels=["limit"],
    )
    for limit, n in m.login_throttled.items():
        throttled.add_metric([limit], n)
    yield throttled
    redis = CounterMetricFamily(
        "hibiki_redis_errors", "Redis commands that failed, by part.", labels=["part"]
    )
    for part, n in m.redis_errors.items():
        redis.add_metric([part], n)
    yield redis
    yield _counter(
        "hibiki_logout_unconfirmed",
        "Logouts answered before every live node confirmed it had closed the token's sockets.",
        m.logouts_unconfirmed,
    )


def _bus_metrics(bus: _Bus | None) -> Iterator[Metric]:
    """Zeros with the in-process bus, so every process exports the same series."""
    yield _counter(
        "hibiki_bus_published",
        "Events sent to Redis (after local delivery).",
        bus.published if bus is not None else 0,
    )
    yield _counter(
        "hibiki_bus_received",
        "Events received from other processes over Redis.",
        bus.received if bus is not None else 0,
    )
    yield _counter(
        "hibiki_bus_reconnects",
        "Times the connection to Redis was re-established after a loss.",
        bus.reconnects if bus is not None else 0,
    )
    yield _counter(
        "hibiki_bus_redis_timeouts",
        "Times Redis left a keepalive PING unanswered past [bus] redis_ping_timeout (link down).",
        bus.timeouts if bus is not None else 0,
    )
    yield _histogram(
        "hibiki_bus_lag_seconds",
        "Publish (wall clock in the envelope) to receive, messages from other processes.",
        bus.lag_seconds if bus is not None else Histogram(LATENCY_BUCKETS),
    )


def _event_metrics(events: _Events | None) -> Iterator[Metric]:
    """The event stream (server/events): zeros without it, so every process has the series."""
    yield _counter(
        "hibiki_events_appended",
        "MESSAGE_CREATED entries appended to the stream (re-appends after a failure included).",
        events.appended if events is not None else 0,
    )
    yield _counter(
        "hibiki_events_recovered",
        "Entries appended from the store (after a restart or a failure), not from memory.",
        events.recovered if events is not None else 0,
    )
    yield _gauge(
        "hibiki_events_outbox_depth",
        "Messages committed and not yet appended to the stream (as far as this process knows).",
        events.outbox_depth if events is not None else 0,
    )
    yield _gauge(
        "hibiki_events_appender_leader",
        "1 if this process is the database's elected event appender now, else 0.",
        int(events.leader) if events is not None else 0,
    )
    lag = GaugeMetricFamily(
        "hibiki_events_consumer_lag",
        "Entries in the streams a consumer group has not been delivered yet (XINFO GROUPS).",
        labels=["group"],
    )
    for group, value in sorted(events.consumer_lag.items() if events is not None else ()):
        lag.add_metric([group], value)
    yield lag


def _replica_metrics(router: ReplicaRouter | None) -> Iterator[Metric]:
    """Read replicas: which are used, their lag, and where history and resume reads went."""
    up = GaugeMetricFamily(
        "hibiki_db_replica_up", "1 if the replica serves reads now.", labels=["replica"]
    )
    seconds = GaugeMetricFamily(
        "hibiki_db_replica_lag_seconds", "Replay lag at the last probe.", labels=["replica"]
    )
    wal = GaugeMetricFamily(
        "hibiki_db_replica_lag_bytes",
        "WAL received but not replayed, at the last probe.",
        labels=["replica"],
    )
    served = CounterMetricFamily(
        "hibiki_db_replica_reads",
        "History and resume reads a replica answered.",
        labels=["replica"],
    )
    primary = CounterMetricFamily(
        "hibiki_db_primary_reads",
        "History and resume reads the primary answered, by why (no replica, behind, failed).",
        labels=["reason"],
    )
    for replica in router.replicas if router is not None else ():
        up.add_metric([replica.name], 1 if replica.usable else 0)
        served.add_metric([replica.name], replica.reads_served)
        if replica.lag is not None:
            seconds.add_metric([replica.name], replica.lag.seconds)
            wal.add_metric([replica.name], replica.lag.bytes)
    for reason in FALLBACK_REASONS:
        primary.add_metric([reason], router.counts.primary_reads[reason] if router else 0)
    yield from (up, seconds, wal, served, primary)


def _gauge(name: str, doc: str, value: float, server_id: list[str] | None = None) -> Metric:
    if server_id is None:
        return GaugeMetricFamily(name, doc, value=value)
    family = GaugeMetricFamily(name, doc, labels=["server_id"])
    family.add_metric(server_id, value)
    return family


def _counter(name: str, doc: str, value: float, server_id: list[str] | None = None) -> Metric:
    if server_id is None:
        return CounterMetricFamily(name, doc, value=value)
    family = CounterMetricFamily(name, doc, labels=["server_id"])
    family.add_metric(server_id, value)
    return family


def _histogram(name: str, doc: str, hist: Histogram) -> Metric:
    return HistogramMetricFamily(name, doc, buckets=hist.cumulative(), sum_value=hist.sum)

"""Prometheus metrics whose updates cost the hot path one integer addition.

Code on a hot path bumps plain attributes of one `Metrics` object (`metrics.deliveries += n`,
`metrics.batch_size.observe(len(batch))`); nothing touches prometheus_client until a scrape,
when `_Collector` turns those numbers, and a few gauges read from live state (connections, writer
queue, outbound bytes), into metric families. prometheus_client's own Counter and Histogram take
a lock on every update; these take none: every update and every scrape runs on the trio thread.

Each `Metrics` owns its `CollectorRegistry` (no global registry), so two servers in one process
(tests, benchmarks) never share a series. docs/operations.md describes every metric.
"""

from __future__ import annotations

import inspect
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, cast

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from storage import AccountStore, MessageStore, RoomStore, Store

# Why the listener refused a connection (server.transport.address_limits), the counter's labels.
RefusalReason = Literal["per_address", "pending_per_address"]
REFUSAL_REASONS: tuple[RefusalReason, ...] = ("per_address", "pending_per_address")

P = ParamSpec("P")
T = TypeVar("T")

DB_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)  # the seed's buckets
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
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


class Histogram:
    """Bucket counts as plain ints: `observe` is one bisect and two additions."""

    __slots__ = ("bounds", "counts", "les", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.les = [repr(b) for b in self.bounds] + ["+Inf"]  # the `le` label values
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # bucket i holds bounds[i-1] < v <= b
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for le, n in zip(self.les, self.counts, strict=True):
            running += n
            out.append((le, float(running)))
        return out


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
        # Live state read at scrape time (see `watch`).
        self._connections: _Connections | None = None
        self._hub: _Hub | None = None
        self._flusher: _Flusher | None = None
        self._writer: _Queue | None = None
        self._writer_capacity = 0
        self._caches: dict[str, _CacheStats] = {}
        self._bus: _Bus | None = None
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

    def exposition(self) -> tuple[bytes, str]:
        """The body and content type of a `GET /metrics` response."""
        return generate_latest(self.registry), CONTENT_TYPE


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._m
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
        yield from _bus_metrics(m._bus)
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
        yield _gauge(
            "hibiki_writer_queue_capacity", "Bound of the writer queue.", m._writer_capacity
        )
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
        hits = CounterMetricFamily("hibiki_cache_hits", "Cache lookups answered.", labels=["cache"])
        misses = CounterMetricFamily(
            "hibiki_cache_misses", "Cache lookups missed.", labels=["cache"]
        )
        for name, cache in sorted(m._caches.items()):
            hits.add_metric([name], cache.hits)
            misses.add_metric([name], cache.misses)
        yield hits
        yield misses
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
    yield _histogram(
        "hibiki_bus_lag_seconds",
        "Publish (wall clock in the envelope) to receive, messages from other processes.",
        bus.lag_seconds if bus is not None else Histogram(LATENCY_BUCKETS),
    )


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


# Store timing ----------------------------------------------------------------------------------


def query_types() -> list[str]:
    """The `query_type` label values: the store interface's calls (bounded, known in advance)."""
    return [
        name
        for part in (AccountStore, RoomStore, MessageStore)
        for name, member in vars(part).items()
        if inspect.iscoroutinefunction(member)
    ]


def timed_store(store: Store, metrics: Metrics) -> Store:
    """`store`, with every call's duration observed into `db_query_duration_seconds`."""
    return cast(Store, _TimedStore(store, metrics))


class _TimedStore:
    """Forwards every attribute to the store; each query call is wrapped once, up front."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        for name in query_types():
            hist = metrics.db_query_seconds.setdefault(name, Histogram(DB_BUCKETS))
            setattr(self, name, _timed(getattr(store, name), hist))

    def __getattr__(self, name: str) -> Any:  # only for what is not wrapped (open, aclose, probe)
        return getattr(self._store, name)


def _timed(call: Callable[P, Awaitable[T]], hist: Histogram) -> Callable[P, Awaitable[T]]:
    async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
        started = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            hist.observe(time.perf_counter() - started)

    return timed

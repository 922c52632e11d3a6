"""Every part of one server process, built from `Config` and wired to each other.

`build_parts` only constructs: nothing runs, binds or touches the database until `serve()`
starts the parts' `run` tasks. The store arrives chosen (`storage.open_store`), the bus and the
shared state from server/seams.py: this is the one place their implementations are plugged in.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import h11
import trio

from server.chat.activity import ActivityRecorder
from server.chat.membership import MembershipSync
from server.chat.read_state import ReadState
from server.chat.reaper import Reaper
from server.chat.registry import ConnectionRegistry
from server.chat.room_control import RoomControl
from server.chat.room_rules import RoomRules
from server.chat.session import ChatServices
from server.chat.token_index import TokenIndex
from server.chat.user_connections import LocalUserConnections
from server.chat.websocket import serve_websocket
from server.config import Config
from server.events import StreamAppender, build_event_appender
from server.fanout.bus import LocalBus
from server.fanout.hub import RoomHub
from server.http.api import HttpServices, create_http_app
from server.http.bridge import HttpBridge
from server.http.login_guard import LoginGuard
from server.ops.health import Readiness
from server.ops.metrics import Metrics
from server.persist.stage_trace import StageTrace, TracedFlusher, TracedWriter
from server.persist.writer import MessageWriter
from server.redis.bus import RedisBus
from server.seams import Cluster, Seams, choose_seams
from server.shutdown import Drain
from server.transport.address_limits import AddressLimits
from server.transport.flusher import Flusher
from server.transport.listener import Listener, reject
from server.transport.origin import origin_allowed
from storage import CompositeStore, EventOutbox, Lifecycle, MembershipCache, Store
from storage.routing import ReplicaRouter, ShardOutboxes
from storage.sqlite import SQLiteStore

Replicas = ReplicaRouter | None  # with `[storage] replicas`: the read router
_OnWebsocket = Callable[
    [socket.socket, str, bytes, h11.Request, Callable[[], None]], Awaitable[None]
]


@dataclass(frozen=True)
class Parts:
    """The parts `serve()` runs (each has `run(task_status=...)`), and the drain that stops them."""

    flusher: Flusher
    hub: RoomHub
    writer: MessageWriter
    readiness: Readiness
    memberships: MembershipSync
    http: HttpBridge
    listener: Listener
    reaper: Reaper
    registry: ConnectionRegistry
    drain: Drain
    cluster: Cluster | None  # with `[bus] redis_url`: the link, bus and shared state in Redis
    events: StreamAppender | None  # with `[events] events_enabled`: the stream's appender
    activity: ActivityRecorder  # sessions' last use and users' last_seen, in batches

    async def shut_down(self, root: trio.CancelScope) -> None:
        """Drain (see server/shutdown.py), then cancel `root`."""
        await self.drain.run(
            connections=self.registry,
            writer=self.writer,
            http=self.http,
            listener=self.listener,
            root=root,
        )


def build_parts(
    config: Config,
    database: Lifecycle,
    store: Store,
    metrics: Metrics,
    replicas: Replicas,
    outbox: EventOutbox | ShardOutboxes | None = None,
) -> Parts:
    """Construct and wire every part; `store` is `database` as the parts use it (timed),
    `replicas` the router its history and resume reads already go through (shown, measured),
    and `outbox` the database's event outbox, or each shard database's (needed with
    `[events] events_enabled`)."""
    drain = Drain(config.timeouts.drain_timeout)
    # The Redis bus's sender takes two rounds from its wake-up to its send (its lock, then the
    # socket): the sweep waits those out (server/transport/flusher.py).
    lead_rounds = 2 if config.bus.redis_url else 0
    flusher = (
        TracedFlusher(StageTrace(config.ops.stage_trace), lead_rounds=lead_rounds)
        if config.ops.stage_trace
        else Flusher(lead_rounds=lead_rounds)
    )
    tokens = TokenIndex()
    seams = choose_seams(config, store, tokens, metrics)
    bus, membership = seams.bus, seams.membership
    hub = RoomHub(flusher, bus=bus, presence=seams.presence, backfill=store)
    bus.attach_hub(hub)
    store = seams.store
    registry = ConnectionRegistry(metrics, drain)
    writer, events = _writer(config, store, bus, metrics, outbox, flusher)
    _watch(metrics, config, registry, hub, flusher, writer, membership, replicas)
    if isinstance(database, CompositeStore) and isinstance(database.backend, SQLiteStore):
        metrics.watch_sqlite(database.backend.commits)
    readiness = _readiness(config, database, writer, drain)
    rules = RoomRules(store)  # the send path's slow mode and roles, forgotten on each change
    memberships, activity = _user_parts(store, hub, seams, registry, rules)
    reads = ReadState(store, bus)
    services = _chat_services(
        config, store, seams, hub, writer, memberships, tokens, metrics, reads
    )
    rooms = RoomControl(store, bus, memberships)
    services = replace(services, rooms=rooms, rules=rules, slow_gate=seams.slow_gate)
    http = _http_bridge(services, readiness, seams, metrics, replicas, activity)
    on_websocket = _websocket_entry(config, services, flusher, registry, drain)
    listener = _listener(config, on_websocket, http, metrics)
    reaper = Reaper(registry, config)
    return Parts(
        flusher,
        hub,
        writer,
        readiness,
        memberships,
        http,
        listener,
        reaper,
        registry,
        drain,
        seams.cluster,
        events,
        activity,
    )


def _chat_services(
    config: Config,
    store: Store,
    seams: Seams,
    hub: RoomHub,
    writer: MessageWriter,
    memberships: MembershipSync,
    tokens: TokenIndex,
    metrics: Metrics,
    reads: ReadState,
) -> ChatServices:
    """What each WebSocket session is given (server/chat/session.py)."""
    return ChatServices(
        config=config,
        store=store,
        hub=hub,
        bus=seams.bus,
        writer=writer,
        membership=seams.membership,
        memberships=memberships,
        tokens=tokens,
        limiter=seams.limiter,
        metrics=metrics,
        reads=reads,
    )


def _writer(
    config: Config,
    store: Store,
    bus: LocalBus | RedisBus,
    metrics: Metrics,
    outbox: EventOutbox | ShardOutboxes | None,
    flusher: Flusher,
) -> tuple[MessageWriter, StreamAppender | None]:
    """The writer, publishing through `bus` and sweeping small deliveries through `flusher`,
    with its after-commit sinks: the event stream's appender when `[events]` asks for one
    (which needs the database's `outbox`)."""
    events = build_event_appender(config, outbox) if outbox is not None else None
    if config.events.events_enabled and events is None:
        raise ValueError("[events] events_enabled needs the database's event outbox")
    if events is not None:
        metrics.watch_events(events)
    writer = (MessageWriter if not isinstance(flusher, TracedFlusher) else _traced(flusher))(
        store,
        bus,
        queue_size=config.limits.writer_queue,
        max_batch=config.limits.writer_max_batch,
        metrics=metrics,
        after_commit=(events,) if events is not None else (),
        sweep=flusher,
    )
    return writer, events


def _traced(flusher: TracedFlusher) -> Callable[..., MessageWriter]:
    """The writer's class with the stage trace (`[ops] stage_trace`) its flusher writes to."""
    return lambda *args, **kwargs: TracedWriter(flusher.trace, *args, **kwargs)


def _watch(
    metrics: Metrics,
    config: Config,
    registry: ConnectionRegistry,
    hub: RoomHub,
    flusher: Flusher,
    writer: MessageWriter,
    membership: MembershipCache,
    replicas: Replicas,
) -> None:
    """Name what /metrics reads at scrape time."""
    metrics.watch(
        connections=registry,
        hub=hub,
        flusher=flusher,
        writer=writer,
        writer_capacity=config.limits.writer_queue,
        caches={"membership": membership},
    )
    if replicas is not None:
        metrics.watch_replicas(replicas)


def _readiness(
    config: Config, database: Lifecycle, writer: MessageWriter, drain: Drain
) -> Readiness:
    return Readiness(
        database,
        writer,
        config.limits.writer_queue,
        lambda: drain.draining,
        probe_interval=config.ops.db_probe_interval,
    )


def _user_parts(
    store: Store, hub: RoomHub, seams: Seams, registry: ConnectionRegistry, rules: RoomRules
) -> tuple[MembershipSync, ActivityRecorder]:
    """Membership sync (attached to the bus) and the activity recorder, over one index of each
    user's connections (the recorder asks it whether a closing connection was the user's last)."""
    connections = LocalUserConnections()
    activity = ActivityRecorder(store, registry.__iter__, connections)
    registry.on_removed = activity.connection_closed
    memberships = _membership_sync(store, hub, seams, connections, rules)
    seams.bus.attach_memberships(memberships)
    return memberships, activity


def _membership_sync(
    store: Store,
    hub: RoomHub,
    seams: Seams,
    connections: LocalUserConnections,
    rules: RoomRules,
) -> MembershipSync:
    return MembershipSync(
        store,
        hub,
        seams.bus,
        invalidation=seams.invalidation,
        connections=connections,
        presence=seams.presence,
        rules=rules,
        cache=seams.membership,
    )


def _listener(
    config: Config, on_websocket: _OnWebsocket, http: HttpBridge, metrics: Metrics
) -> Listener:
    return Listener(
        config.server.host,
        config.server.port,
        handshake_timeout=config.timeouts.handshake_timeout,
        on_websocket=on_websocket,
        on_http=http.serve,
        limits=AddressLimits(
            config.limits.max_connections_per_address, config.limits.max_pending_per_address
        ),
        metrics=metrics,
        reuse_port=config.server.workers > 1,  # see server/ops/supervisor.py
    )


def _http_bridge(
    chat: ChatServices,
    readiness: Readiness,
    seams: Seams,
    metrics: Metrics,
    replicas: Replicas,
    activity: ActivityRecorder,
) -> HttpBridge:
    """The HTTP API over the same parts as the WebSocket sessions (`chat`)."""
    config, store, writer, memberships, reads = (
        chat.config,
        chat.store,
        chat.writer,
        chat.memberships,
        chat.reads,
    )
    assert reads is not None
    services = HttpServices(
        rooms=chat.rooms,
        store=store,
        server_id=config.server.server_id,
        token_ttl=config.accounts.token_ttl,
        max_text=config.limits.max_text,
        max_batch=config.limits.http_max_batch,
        publish=writer.publish_stored,
        membership_changed=memberships.changed,
        mark_read=reads.mark,
        read_state=reads.of_rooms,
        room_created=seams.bus.publish_room_created,
        readiness=readiness.reason,
        metrics=metrics.exposition if config.ops.metrics else None,
        auth_failed=metrics.count_auth_failure,
        token_revoked=seams.revoke,
        bus_status=lambda: seams.bus.status,
        replicas=replicas.status if replicas is not None else None,
        body_timeout=config.timeouts.http_read_timeout,
        login_guard=LoginGuard.from_config(config, metrics.count_login_throttled),
        submit=writer.submit,
        seen=activity.seen,
    )
    return HttpBridge(
        create_http_app(services),
        idle_timeout=config.timeouts.http_idle_timeout,
        read_timeout=config.timeouts.http_read_timeout,
    )


def _websocket_entry(
    config: Config,
    services: ChatServices,
    flusher: Flusher,
    registry: ConnectionRegistry,
    drain: Drain,
) -> _OnWebsocket:
    """What the listener does with a `GET /ws` upgrade: refused while draining (503) or from a
    foreign origin (403), else served, counted by the drain until its socket is closed."""

    async def on_websocket(
        sock: socket.socket,
        peer: str,
        head: bytes,
        request: h11.Request,
        leave_pending: Callable[[], None],
    ) -> None:
        if drain.draining:
            reject(sock, 503, b"shutting down")
            return
        if not origin_allowed(request, config.chat.allowed_origins):
            reject(sock, 403, b"origin not allowed")
            return
        with drain.serving():
            serving = serve_websocket(
                sock, peer, head, request, services, flusher, registry, drain, leave_pending
            )
            del head, request  # not kept for the connection's life (see Listener._handle)
            await serving

    return on_websocket

"""The whole process as one task tree.

    serve()
    └── root nursery
        ├── flusher       writes every dirty connection's backlog (and owns blocked writers)
        ├── redis link    with `redis_url`: Redis connections, reconnects (server.redis)
        ├── redis bus     its sender, store catch-ups and tail check
        ├── hub           fills seq gaps in what the bus delivers (never, with one process)
        ├── writer        group-commits sends, then publishes and acks
        ├── readiness     database write probe for /readyz
        ├── memberships   tells a user's other connections of a join (`joined`)
        ├── http bridge   quart-trio app lifespan (hypercorn serves each HTTP connection)
        ├── listener      accepts; owns one handler task per connection (WebSocket or HTTP)
        └── reaper        hello timeouts, expired tokens, heartbeat pings, stale peers

Shutdown (`stop` set, e.g. by SIGTERM), bounded by `drain_timeout`: /readyz answers 503 and new
WebSocket upgrades are refused with 503; no connection reads another request; the writer commits
and acks what is queued; every WebSocket is closed with 1001 and its close handshake awaited; then
the listener stops and the store closes. systemd is told READY=1 once serving, STOPPING=1 at
the start.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterator

import h11
import trio

from protocol import ChatError
from server.chat.membership import MembershipSync
from server.chat.membership_invalidation import LocalMembershipInvalidation
from server.chat.ratelimit import UserRateLimiter
from server.chat.reaper import Reaper
from server.chat.registry import ConnectionRegistry
from server.chat.session import ChatServices
from server.chat.token_index import TokenIndex
from server.chat.user_connections import LocalUserConnections
from server.chat.websocket import serve_websocket
from server.config import Config
from server.fanout.bus import LocalBus
from server.fanout.hub import RoomHub
from server.fanout.presence import LocalOnlineUsers
from server.http.api import HttpServices, create_http_app
from server.http.bridge import HttpBridge
from server.http.login_guard import LoginGuard
from server.ops import sdnotify
from server.ops.health import Readiness
from server.ops.metrics import Metrics, timed_store
from server.persist.writer import MessageWriter
from server.redis import RedisBus, RedisLink
from server.transport.address_limits import AddressLimits
from server.transport.flusher import Flusher
from server.transport.listener import Listener, reject
from server.transport.origin import origin_allowed
from storage import MembershipCache, StorageError, Store, open_store

_log = logging.getLogger(__name__)


class StartupError(ChatError):
    """The server cannot start (its database cannot be opened, its port is taken): the message
    is one line for the operator, and a traceback would add nothing to it."""


async def serve(
    config: Config,
    stop: trio.Event,
    *,
    metrics: Metrics | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until `stop` is set; `task_status.started(port)` once accepting.

    `metrics` collects what /metrics exports (a fresh one if None; pass one to read it after).
    Raises `StartupError` if the database cannot be opened or the port cannot be listened on.
    """
    metrics = Metrics(config.server.server_id) if metrics is None else metrics
    database = open_store(
        config.storage.db_path,
        synchronous=config.storage.sqlite_synchronous,
        readers=config.storage.sqlite_readers,
        scrypt_n=config.accounts.scrypt_n,
    )
    try:
        await database.open()
    except StorageError as exc:
        raise StartupError(str(exc)) from exc
    store = timed_store(database, metrics)
    try:
        async with trio.open_nursery() as root:
            flusher = Flusher()
            await root.start(flusher.run)
            # Every room event goes through the bus; this process's hub is fed by it alone.
            bus = await _start_bus(config, store, metrics, root)
            presence = LocalOnlineUsers(bus)
            hub = RoomHub(flusher, bus=bus, presence=presence, backfill=store)
            bus.attach_hub(hub)
            await root.start(hub.run)
            registry = ConnectionRegistry(metrics)
            writer = MessageWriter(
                store,
                bus,
                queue_size=config.limits.writer_queue,
                max_batch=config.limits.writer_max_batch,
                metrics=metrics,
            )
            await root.start(writer.run)
            membership = MembershipCache(
                store, config.chat.membership_cache_size, config.chat.membership_cache_ttl
            )
            metrics.watch(
                connections=registry,
                hub=hub,
                flusher=flusher,
                writer=writer,
                writer_capacity=config.limits.writer_queue,
                caches={"membership": membership},
            )
            readiness = Readiness(
                database,
                writer,
                config.limits.writer_queue,
                lambda: registry.draining,
                probe_interval=config.ops.db_probe_interval,
            )
            await root.start(readiness.run)
            memberships = MembershipSync(
                store,
                hub,
                bus,
                invalidation=LocalMembershipInvalidation(membership),
                connections=LocalUserConnections(),
                presence=presence,
            )
            bus.attach_memberships(memberships)
            await root.start(memberships.run)
            tokens = TokenIndex()
            services = ChatServices(
                config=config,
                store=store,
                hub=hub,
                bus=bus,
                writer=writer,
                membership=membership,
                memberships=memberships,
                tokens=tokens,
                limiter=UserRateLimiter(config.limits.rate_per_second, config.limits.rate_burst),
                metrics=metrics,
            )

            http = HttpBridge(
                create_http_app(
                    HttpServices(
                        store=store,
                        server_id=config.server.server_id,
                        token_ttl=config.accounts.token_ttl,
                        max_text=config.limits.max_text,
                        max_batch=config.limits.http_max_batch,
                        publish=writer.publish_stored,
                        membership_changed=memberships.changed,
                        readiness=readiness.reason,
                        bus_status=lambda: bus.status,
                        metrics=metrics.exposition if config.ops.metrics else None,
                        auth_failed=metrics.count_auth_failure,
                        token_revoked=tokens.revoke,
                        body_timeout=config.timeouts.http_read_timeout,
                        login_guard=LoginGuard.from_config(config, metrics.count_login_throttled),
                    )
                ),
                idle_timeout=config.timeouts.http_idle_timeout,
                read_timeout=config.timeouts.http_read_timeout,
            )
            await root.start(http.run)

            websockets = _OpenSockets()

            async def on_websocket(
                sock: socket.socket,
                peer: str,
                head: bytes,
                request: h11.Request,
                leave_pending: Callable[[], None],
            ) -> None:
                if registry.draining:
                    reject(sock, 503, b"shutting down")
                    return
                if not origin_allowed(request, config.chat.allowed_origins):
                    reject(sock, 403, b"origin not allowed")
                    return
                with websockets.track():
                    await serve_websocket(
                        sock, peer, head, request, services, flusher, registry, leave_pending
                    )

            listener = Listener(
                config.server.host,
                config.server.port,
                handshake_timeout=config.timeouts.handshake_timeout,
                on_websocket=on_websocket,
                on_http=http.serve,
                limits=AddressLimits(
                    config.limits.max_connections_per_address, config.limits.max_pending_per_address
                ),
                metrics=metrics,
            )
            try:
                port = await root.start(listener.run)
            except OSError as exc:  # bind or listen: e.g. the port is taken
                where = f"{config.server.host}:{config.server.port}"
                raise StartupError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
            await root.start(Reaper(registry, config).run)
            _log.info(
                "hibiki %s listening on %s:%d",
                config.server.server_id,
                config.server.host,
                port,
                extra={
                    "server_id": config.server.server_id,
                    "host": config.server.host,
                    "port": port,
                },
            )
            sdnotify.notify("READY=1", f"STATUS=listening on {config.server.host}:{port}")
            task_status.started(port)

            await stop.wait()
            drain_started = trio.current_time()
            sdnotify.notify("STOPPING=1", "STATUS=draining connections")
            _log.info("draining", extra={"connections": len(registry)})
            with trio.move_on_after(config.timeouts.drain_timeout) as drain:
                registry.stop_reading()  # from here /readyz is 503 and upgrades are refused
                writer.close_input()
                await writer.finished.wait()
                registry.writer_flushed.set()
                await websockets.all_closed()
            # Only now: hypercorn refuses new HTTP connections once told (no /readyz answer).
            await http.stop_keepalive()
            listener.stop_accepting()
            http.stop()
            root.cancel_scope.cancel()
            extra = {"drain_s": round(trio.current_time() - drain_started, 3)}
            if drain.cancelled_caught:
                _log.warning("drain timed out", extra=extra | {"connections": len(registry)})
            else:
                _log.info("drained", extra=extra)
    finally:
        with trio.CancelScope(shield=True):
            await database.aclose()
        _log.info("stopped", extra={"server_id": config.server.server_id})


async def _start_bus(
    config: Config, store: Store, metrics: Metrics, nursery: trio.Nursery
) -> LocalBus | RedisBus:
    """The in-process bus, or with `redis_url` the Redis bus (its link and tasks started)."""
    if not config.bus.redis_url:
        return LocalBus()
    link = RedisLink(
        config.bus.redis_url,
        namespace=config.bus.bus_namespace,
        connect_timeout=config.bus.redis_connect_timeout,
    )
    bus = RedisBus(
        link,
        store,
        partitions=config.bus.bus_partitions,
        tail_interval=config.bus.bus_tail_check_interval,
        cover_timeout=config.bus.redis_connect_timeout,
    )
    await nursery.start(link.run)
    await nursery.start(bus.run)
    metrics.watch_bus(bus)
    return bus


class _OpenSockets:
    """Counts running WebSocket handlers (a handler returns once its socket is closed)."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = trio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        if not self._count:
            self._idle = trio.Event()
        self._count += 1
        try:
            yield
        finally:
            self._count -= 1
            if not self._count:
                self._idle.set()

    async def all_closed(self) -> None:
        await self._idle.wait()

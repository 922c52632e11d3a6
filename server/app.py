"""The whole process as one task tree.

    serve()
    └── root nursery
        ├── flusher       writes every dirty connection's backlog (and owns blocked writers)
        ├── writer        group-commits sends, then publishes and acks
        ├── readiness     database write probe for /readyz
        ├── http bridge   quart-trio app lifespan (hypercorn serves each HTTP connection)
        ├── listener      accepts; owns one handler task per connection (WebSocket or HTTP)
        └── reaper        hello timeouts, heartbeat pings, stale peers

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
from collections.abc import Iterator

import h11
import trio

from storage.cache import MembershipCache
from storage.sqlite import SQLiteStore

from . import sdnotify
from .config import Config
from .flusher import Flusher
from .health import Readiness
from .http_app import HttpServices, create_http_app
from .http_bridge import HttpBridge
from .hub import RoomHub
from .listener import Listener, reject
from .login_guard import LoginGuard
from .membership_sync import MembershipSync
from .metrics import Metrics, timed_store
from .origin import origin_allowed
from .ratelimit import UserRateLimiter
from .reaper import Reaper
from .registry import ConnectionRegistry
from .session import ChatServices
from .writer import MessageWriter
from .ws_handler import serve_websocket

_log = logging.getLogger(__name__)


async def serve(
    config: Config,
    stop: trio.Event,
    *,
    metrics: Metrics | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until `stop` is set; `task_status.started(port)` once accepting.

    `metrics` collects what /metrics exports (a fresh one if None; pass one to read it after).
    """
    metrics = Metrics(config.server_id) if metrics is None else metrics
    sqlite = SQLiteStore(
        config.db_path,
        synchronous=config.sqlite_synchronous,
        readers=config.sqlite_readers,
        scrypt_n=config.scrypt_n,
    )
    await sqlite.open()
    store = timed_store(sqlite, metrics)
    try:
        async with trio.open_nursery() as root:
            flusher = Flusher()
            await root.start(flusher.run)
            hub = RoomHub(flusher)
            registry = ConnectionRegistry(metrics)
            writer = MessageWriter(
                store,
                hub,
                queue_size=config.writer_queue,
                max_batch=config.writer_max_batch,
                metrics=metrics,
            )
            await root.start(writer.run)
            membership = MembershipCache(
                store, config.membership_cache_size, config.membership_cache_ttl
            )
            metrics.watch(
                connections=registry,
                hub=hub,
                flusher=flusher,
                writer=writer,
                writer_capacity=config.writer_queue,
                caches={"membership": membership},
            )
            readiness = Readiness(
                config.db_path,
                writer,
                config.writer_queue,
                lambda: registry.draining,
                probe_interval=config.db_probe_interval,
            )
            await root.start(readiness.run)
            memberships = MembershipSync(store, hub, membership)
            services = ChatServices(
                config=config,
                store=store,
                hub=hub,
                writer=writer,
                membership=membership,
                memberships=memberships,
                limiter=UserRateLimiter(config.rate_per_second, config.rate_burst),
                metrics=metrics,
            )

            http = HttpBridge(
                create_http_app(
                    HttpServices(
                        store=store,
                        server_id=config.server_id,
                        token_ttl=config.token_ttl,
                        max_text=config.max_text,
                        max_batch=config.http_max_batch,
                        publish=writer.publish_stored,
                        membership_changed=memberships.changed,
                        readiness=readiness.reason,
                        metrics=metrics.exposition if config.metrics else None,
                        auth_failed=metrics.count_auth_failure,
                        login_guard=LoginGuard.from_config(config, metrics.count_login_throttled),
                    )
                )
            )
            await root.start(http.run)

            websockets = _OpenSockets()

            async def on_websocket(
                sock: socket.socket, peer: str, head: bytes, request: h11.Request
            ) -> None:
                if registry.draining:
                    reject(sock, 503, b"shutting down")
                    return
                if not origin_allowed(request, config.allowed_origins):
                    reject(sock, 403, b"origin not allowed")
                    return
                with websockets.track():
                    await serve_websocket(sock, peer, head, request, services, flusher, registry)

            listener = Listener(
                config.host,
                config.port,
                handshake_timeout=config.handshake_timeout,
                on_websocket=on_websocket,
                on_http=http.serve,
            )
            port = await root.start(listener.run)
            await root.start(Reaper(registry, config).run)
            _log.info(
                "hibiki %s listening on %s:%d",
                config.server_id,
                config.host,
                port,
                extra={"server_id": config.server_id, "host": config.host, "port": port},
            )
            sdnotify.notify("READY=1", f"STATUS=listening on {config.host}:{port}")
            task_status.started(port)

            await stop.wait()
            drain_started = trio.current_time()
            sdnotify.notify("STOPPING=1", "STATUS=draining connections")
            _log.info("draining", extra={"connections": len(registry)})
            with trio.move_on_after(config.drain_timeout) as drain:
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
            await sqlite.aclose()
        _log.info("stopped", extra={"server_id": config.server_id})


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

"""The whole process as one task tree.

    serve()
    └── root nursery
        ├── flusher       writes every dirty connection's backlog (and owns blocked writers)
        ├── writer        group-commits sends, then publishes and acks
        ├── http bridge   quart-trio app lifespan (hypercorn serves each HTTP connection)
        ├── listener      accepts; owns one handler task per connection (WebSocket or HTTP)
        └── reaper        hello timeouts, heartbeat pings, stale peers

Shutdown (`stop` set, e.g. by SIGTERM): stop accepting, stop reading, let the writer commit and
ack what is queued, close every WebSocket with 1001, wait (bounded) for handlers, close the store.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

import h11
import trio
from storage.sqlite import SQLiteStore

from protocol import Message, encode
from storage.cache import MembershipCache

from .config import Config
from .flusher import Flusher
from .frames import text_frame
from .http_app import HttpServices, create_http_app
from .http_bridge import HttpBridge
from .hub import RoomHub
from .listener import Listener, reject
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
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until `stop` is set; `task_status.started(port)` once accepting."""
    store = SQLiteStore(
        config.db_path,
        synchronous=config.sqlite_synchronous,
        readers=config.sqlite_readers,
        scrypt_n=config.scrypt_n,
    )
    await store.open()
    try:
        async with trio.open_nursery() as root:
            flusher = Flusher()
            await root.start(flusher.run)
            hub = RoomHub()
            registry = ConnectionRegistry()
            writer = MessageWriter(
                store, hub, queue_size=config.writer_queue, max_batch=config.writer_max_batch
            )
            await root.start(writer.run)
            membership = MembershipCache(
                store, config.membership_cache_size, config.membership_cache_ttl
            )
            services = ChatServices(
                config=config,
                store=store,
                hub=hub,
                writer=writer,
                membership=membership,
                limiter=UserRateLimiter(config.rate_per_second, config.rate_burst),
            )

            def publish(messages: Sequence[Message]) -> None:
                for message in messages:
                    hub.publish(message.room, text_frame(encode(message)), message.seq)

            def readiness() -> str | None:
                return "shutting down" if registry.draining else None

            http = HttpBridge(
                create_http_app(
                    HttpServices(
                        store=store,
                        server_id=config.server_id,
                        token_ttl=config.token_ttl,
                        max_text=config.max_text,
                        max_batch=config.http_max_batch,
                        publish=publish,
                        membership_changed=membership.invalidate,
                        readiness=readiness,
                    )
                )
            )
            await root.start(http.run)

            async def on_websocket(
                sock: socket.socket, peer: str, head: bytes, request: h11.Request
            ) -> None:
                if not origin_allowed(request, config.allowed_origins):
                    reject(sock, 403, b"origin not allowed")
                    return
                await serve_websocket(sock, peer, head, services, flusher, registry)

            listener = Listener(
                config.host,
                config.port,
                handshake_timeout=config.handshake_timeout,
                on_websocket=on_websocket,
                on_http=http.serve,
            )
            port = await root.start(listener.run)
            await root.start(Reaper(registry, config).run)
            _log.info("hibiki %s listening on %s:%d", config.server_id, config.host, port)
            task_status.started(port)

            await stop.wait()
            _log.info("shutting down: draining connections")
            with trio.move_on_after(config.drain_timeout):
                listener.stop_accepting()
                await http.stop_keepalive()
                registry.stop_reading()
                writer.close_input()
                await writer.finished.wait()
                registry.writer_flushed.set()
                await registry.emptied.wait()
            http.stop()
            root.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()
        _log.info("stopped")

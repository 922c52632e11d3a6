"""The whole process as one task tree.

    serve()
    └── root nursery
        ├── flusher       writes every dirty connection's backlog (and owns blocked writers)
        ├── replicas      with `[storage] replicas`: their lag probes (storage.routing)
        ├── cluster       with `[bus] redis_url`: the Redis link, the bus, shared state
        ├── redis link    with `redis_url`: Redis connections, reconnects (server.redis)
        ├── redis bus     its sender, store catch-ups and tail check
        ├── events        with `[events] events_enabled`: appends committed messages to the stream
        ├── hub           fills seq gaps in what the bus delivers (never, with one process)
        ├── writer        group-commits sends, then publishes and acks
        ├── readiness     database write probe for /readyz
        ├── memberships   tells a user's other connections of a join (`joined`)
        ├── http bridge   quart-trio app lifespan (hypercorn serves each HTTP connection)
        ├── listener      accepts; owns one handler task per connection (WebSocket or HTTP)
        └── reaper        hello timeouts, expired tokens, heartbeat pings, stale peers

The parts are built and wired in server/assembly.py. Shutdown (`stop` set, e.g. by SIGTERM) is
server/shutdown.py's `Drain`, bounded by `drain_timeout`: /readyz answers 503 and new WebSocket
upgrades are refused with 503; no connection reads another request; the writer commits and acks
what is queued; every WebSocket is closed with 1001 and its close handshake awaited; then the
listener stops and the store closes. systemd is told READY=1 once serving, STOPPING=1 at the
start of the drain.
"""

from __future__ import annotations

import logging

import trio

from protocol import ChatError
from server.assembly import build_parts
from server.config import Config
from server.ops import sdnotify
from server.ops.metrics import Metrics, timed_store
from server.persist.search_indexer import run_search_indexer
from storage import CompositeStore, StorageError, open_store
from storage.routing import ProbePolicy, ReplicaRouter, ShardedStore, attach_replicas

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
    database, replicas = await _open_database(config)
    try:
        store = timed_store(database, metrics)
        outbox = (  # with shards, each shard database is an outbox of its own
            database.sharded.event_outboxes()
            if isinstance(database, ShardedStore)
            else database.events
        )
        parts = build_parts(config, database, store, metrics, replicas, outbox)
        async with trio.open_nursery() as root:
            await root.start(parts.flusher.run)
            if replicas is not None:  # lag probes; reads go to the primary until one is up
                await root.start(replicas.run)
            if parts.cluster is not None:  # [bus] redis_url: link, bus and shared state
                await root.start(parts.cluster.run)
            if parts.events is not None:  # before the writer: its cursors are read first
                await root.start(parts.events.run)
            await root.start(parts.hub.run)
            await root.start(parts.writer.run)
            await root.start(parts.readiness.run)
            await root.start(parts.memberships.run)
            await root.start(parts.http.run)
            try:
                port = await root.start(parts.listener.run)
            except OSError as exc:  # bind or listen: e.g. the port is taken
                where = f"{config.server.host}:{config.server.port}"
                raise StartupError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
            await root.start(parts.reaper.run)
            await root.start(parts.activity.run)
            await root.start(run_search_indexer, store)
            _serving(config, port)
            task_status.started(port)

            await stop.wait()
            await parts.shut_down(root.cancel_scope)
    finally:
        with trio.CancelScope(shield=True):
            if replicas is not None:
                await replicas.aclose()
            await database.aclose()
        _log.info("stopped", extra={"server_id": config.server.server_id})


async def _open_database(config: Config) -> tuple[CompositeStore, ReplicaRouter | None]:
    """The store, open, and the read-replica router in front of it (None without replicas)."""
    database = open_store(
        config.storage.db_path,
        synchronous=config.storage.sqlite_synchronous,
        readers=config.storage.sqlite_readers,
        loop_commit=config.storage.sqlite_loop_commit,
        loop_commit_stall=config.storage.sqlite_loop_commit_stall,
        pool_size=config.storage.pool_size,
        statement_timeout=config.storage.statement_timeout,
        synchronous_commit=config.storage.synchronous_commit,
        scrypt_n=config.accounts.scrypt_n,
        shards=config.storage.shards,
    )
    replicas = attach_replicas(database, config.storage.replicas, _replica_policy(config))
    try:
        await database.open()
    except StorageError as exc:
        raise StartupError(str(exc)) from exc
    if replicas is not None:
        try:
            await replicas.open()
        except BaseException:
            with trio.CancelScope(shield=True):
                await database.aclose()
            raise
    return database, replicas


def _replica_policy(config: Config) -> ProbePolicy:
    storage = config.storage
    return ProbePolicy(
        interval=storage.replica_probe_interval,
        timeout=storage.replica_timeout,
        max_lag=storage.replica_max_lag,
    )


def _serving(config: Config, port: int) -> None:
    """Say so in the log and to systemd (READY=1)."""
    _log.info(
        "hibiki %s listening on %s:%d",
        config.server.server_id,
        config.server.host,
        port,
        extra={"server_id": config.server.server_id, "host": config.server.host, "port": port},
    )
    sdnotify.notify("READY=1", f"STATUS=listening on {config.server.host}:{port}")

"""One server kind on one or several processes: with several, a private redis-server carries
each room's events between them (hibiki's `--redis`, python-socketio's AsyncRedisManager,
Node Socket.IO's redis adapter) and every hibiki process opens the same SQLite file."""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from _benchredis import RedisProcess, redis_server_binary, start_redis
from _benchservers import ServerProcess, hibiki_supports_redis, node_sio_missing, start_server

CLUSTER_KINDS = ("hibiki", "socketio", "node-socketio")


@dataclass(frozen=True)
class Case:
    """A server kind on `processes` processes (more than one: through Redis)."""

    kind: str
    processes: int = 1

    @property
    def name(self) -> str:
        return f"{self.kind} x{self.processes}"

    @classmethod
    def parse(cls, text: str) -> Case:
        """`hibiki`, `socketio:2`, `node-socketio:1`, ..."""
        kind, _, count = text.partition(":")
        if kind not in CLUSTER_KINDS:
            raise ValueError(f"unknown server {kind!r} (one of {', '.join(CLUSTER_KINDS)})")
        processes = int(count) if count else 1
        if processes < 1:
            raise ValueError(f"{text!r}: at least one process")
        return cls(kind, processes)


def case_missing(case: Case) -> str | None:
    """Why `case` cannot run on this machine (a tool, a module or a hibiki flag absent), or None."""
    if case.kind == "node-socketio":
        missing = node_sio_missing()
        if missing is not None:
            return missing
    if case.kind == "socketio" and importlib.util.find_spec("socketio") is None:
        return "python-socketio (the `bench` extra) is not installed"
    if case.processes == 1:
        return None
    if redis_server_binary() is None:
        return "redis-server is not installed (apt-get install redis-server)"
    if case.kind == "socketio" and importlib.util.find_spec("redis") is None:
        return "the `redis` package (python-socketio's AsyncRedisManager; `bench` extra) is absent"
    if case.kind == "hibiki" and not hibiki_supports_redis():
        return "`hibiki serve --help` lists no --redis: hibiki's Redis bus is not built yet"
    return None


@dataclass
class Cluster:
    case: Case
    servers: list[ServerProcess] = field(default_factory=list)
    redis: RedisProcess | None = None

    @property
    def server_pids(self) -> tuple[int, ...]:
        return tuple(s.pid for s in self.servers)

    @property
    def extra_pids(self) -> tuple[int, ...]:
        return () if self.redis is None else (self.redis.pid,)

    def stop(self) -> None:
        """Servers first (hibiki drains into its store), then their Redis."""
        for server in self.servers:
            server.stop()
        if self.redis is not None:
            self.redis.stop()


def start_cluster(case: Case, workdir: Path, *, cpu: int | None = None) -> Cluster:
    """Start `case` with its files under `workdir`, every process (and Redis) on `cpu`.

    The processes start one after another, so the first creates hibiki's schema alone."""
    cluster = Cluster(case)
    with contextlib.ExitStack() as undo:
        undo.callback(cluster.stop)
        redis_url = None
        if case.processes > 1:
            cluster.redis = start_redis(workdir / "redis", cpu=cpu)
            redis_url = cluster.redis.url()
        for i in range(case.processes):
            extra: tuple[str, ...] = ()
            if case.kind == "hibiki" and case.processes > 1:
                extra = ("--server-id", f"bench-{i}")
            server = start_server(
                case.kind,
                workdir / f"p{i}",
                cpu=cpu,
                redis_url=redis_url,
                db=workdir / "hibiki.db" if case.kind == "hibiki" else None,
                extra_args=extra,
            )
            cluster.servers.append(server)
        undo.pop_all()
    return cluster

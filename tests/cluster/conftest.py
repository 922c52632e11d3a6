"""Several `hibiki serve` processes sharing one database and one Redis.

`cluster_db` is the nodes' `--db`, once per backend: a SQLite file (processes of one host) and a
fresh PostgreSQL database (what several hosts share; tests/postgres.py). Without PostgreSQL the
`postgresql` runs skip, or fail under `CI=true`.
`redis_url` is the shared Redis at 127.0.0.1:6379 (each test gets its own key namespace, deleted
after); `own_redis` is a `redis-server` of the test's own on a free port, for fault tests that
stop and restart it. Without Redis (or `redis-server`) these tests skip with the reason, or fail
under `CI=true`, where a missing Redis is a broken CI image, not a reason to test less.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import coredis
import httpx
import pytest
import trio

from client import open_websocket

from ..conftest import STEP, Account, Peer
from ..postgres import ReusedDatabases

ROOT = Path(__file__).resolve().parents[2]
SHARED_REDIS = ("127.0.0.1", 6379)


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


BACKENDS = ("sqlite", "postgresql")
# For a test on one backend only (say why beside it).
SQLITE_ONLY: pytest.MarkDecorator = pytest.mark.parametrize("cluster_db", ["sqlite"], indirect=True)
POSTGRESQL_ONLY: pytest.MarkDecorator = pytest.mark.parametrize(
    "cluster_db", ["postgresql"], indirect=True
)


@pytest.fixture(params=BACKENDS)
def cluster_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The nodes' `--db`, once on each backend (or on one: `SQLITE_ONLY`, `POSTGRESQL_ONLY`);
    an empty PostgreSQL database lent by the test process's pool (tests/postgres.py)."""
    if request.param == "sqlite":
        yield str(tmp_path / "hibiki.db")
        return
    pool: ReusedDatabases = request.getfixturevalue("reused_databases")
    with pool.lend() as databases:  # skips (or fails under CI=true) without PostgreSQL
        yield databases.url("cluster")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def namespace() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture
async def redis_url(namespace: str) -> AsyncIterator[str]:
    """The shared Redis; the test's keys (all under `namespace`) are deleted afterwards."""
    if not _reachable(*SHARED_REDIS):
        _missing("no Redis at 127.0.0.1:6379")
    url = "redis://127.0.0.1:6379/0"
    yield url
    client: coredis.Redis[bytes] = coredis.Redis.from_url(url, decode_responses=False)
    async with client:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(keys)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class OwnRedis:
    """A `redis-server` of the test's own (no persistence), which it may stop and restart."""

    directory: Path
    port: int = field(default_factory=_free_port)
    process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it on its port (again, after `stop`) and return once it accepts connections."""
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        process = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE)
        self.process = process
        assert process.stdout is not None
        out = bytearray()
        with trio.fail_after(STEP):
            while b"Ready to accept connections" not in out:
                chunk = await process.stdout.receive_some()
                assert chunk, out.decode()
                out += chunk
        await process.stdout.aclose()  # redis-server then logs nowhere: a closed stdout is fine

    def pause(self) -> None:
        """SIGSTOP: every TCP connection stays open and nothing is answered (a hung Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        """Kill it (SIGKILL: subscribers see the connection drop, nothing is saved)."""
        if self.process is not None:
            self.process.kill()
            await self.process.wait()
            self.process = None


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        _missing("no redis-server on PATH")
    redis = OwnRedis(tmp_path)
    await redis.start()
    try:
        yield redis
    finally:
        with trio.CancelScope(shield=True):
            await redis.stop()


@dataclass
class Node:
    process: trio.Process
    port: int
    log: bytearray

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@dataclass
class Cluster:
    """Starts `hibiki serve` processes on one database and Redis; each is killed at the end."""

    db: str  # their `--db`: a SQLite file or a postgresql:// URL
    redis_url: str
    namespace: str
    nursery: trio.Nursery
    nodes: list[Node] = field(default_factory=list)
    args: tuple[str, ...] = ()  # more `hibiki serve` flags (a later flag wins over a default)
    env: dict[str, str] = field(default_factory=dict)  # more environment (HIBIKI_* settings)

    async def start_node(self) -> Node:
        name = f"n{len(self.nodes)}"
        cmd = [sys.executable, "-m", "server.cli", "serve", "--port", "0", "--db", self.db]
        cmd += ["--rate-limit", "0", "--server-id", name, "--redis", self.redis_url, *self.args]
        env = os.environ | {
            "PYTHONPATH": str(ROOT),
            "HIBIKI_BUS_NAMESPACE": self.namespace,
            "HIBIKI_BUS_TAIL_CHECK_INTERVAL": "0.5",
            "HIBIKI_LOG_FORMAT": "json",
        }
        env |= self.env
        run = partial(trio.run_process, cmd, cwd=ROOT, stderr=subprocess.PIPE, check=False, env=env)
        process: trio.Process = await self.nursery.start(run)
        assert process.stderr is not None
        log = bytearray()
        with trio.fail_after(STEP * 3):
            while b"listening on" not in log:
                chunk = await process.stderr.receive_some()
                assert chunk, log.decode()
                log += chunk
        line = next(ln for ln in log.decode().splitlines() if "listening on" in ln)
        node = Node(process, int(json.loads(line)["port"]), log)

        async def drain_stderr() -> None:
            while chunk := await process.stderr.receive_some():  # type: ignore[union-attr]
                log.extend(chunk)

        self.nursery.start_soon(drain_stderr)
        self.nodes.append(node)
        return node

    def kill(self, node: Node) -> None:
        node.process.send_signal(signal.SIGKILL)


@asynccontextmanager
async def open_cluster(
    db: str | Path,
    redis_url: str,
    namespace: str,
    size: int,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> AsyncIterator[Cluster]:
    """`size` nodes on `db`: a `cluster_db`, or a test's directory (a SQLite file in it)."""
    database = str(db / "hibiki.db") if isinstance(db, Path) else db
    async with trio.open_nursery() as nursery:
        cluster = Cluster(database, redis_url, namespace, nursery, args=args, env=env or {})
        try:
            for _ in range(size):
                await cluster.start_node()
            yield cluster
        finally:
            for node in cluster.nodes:
                if node.process.returncode is None:
                    node.process.kill()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def peer_on(
    node: Node, account: Account, *, resume: dict[str, int] | None = None
) -> AsyncIterator[Peer]:
    """A client of `node` that has said hello (and been welcomed)."""
    async with open_websocket(node.ws) as ws:
        peer = Peer(ws)
        hello: dict[str, Any] = {"type": "hello", "token": account.token}
        if resume is not None:
            hello["resume"] = resume
        await peer.send(**hello)
        await peer.expect("welcome")
        yield peer


@asynccontextmanager
async def http_of(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.http, timeout=STEP) as client:
        yield client


def log_lines(node: Node) -> Iterator[dict[str, Any]]:
    for line in node.log.decode(errors="replace").splitlines():
        if line.startswith("{"):
            yield json.loads(line)

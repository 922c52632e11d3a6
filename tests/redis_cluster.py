"""A real Redis Cluster for tests: `redis-server --cluster-enabled yes` processes on free ports in
a temp dir, joined by `redis-cli --cluster create` (no replicas), each of which a test may kill
and restart (its nodes.conf keeps its id and slots). Without cluster support the tests skip,
except under CI=true, where they fail."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from server.redis import Address, SlotMap
from server.redis.resp import Reply, ReplyReader, command

STEP = 10.0


def collect_coredis_garbage() -> Iterator[None]:
    """For an autouse fixture: coredis 6.9's cluster layout leaves an anyio memory stream to the
    garbage collector (ResourceWarning "Unclosed <MemoryObject...>"), not ours to close."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def _free_cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


async def ask(address: Address, *parts: bytes | str | int) -> Reply:
    """One command to one node, on a connection of its own."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(command(*parts))
        return await ReplyReader(stream).read()


@dataclass
class ClusterNode:
    directory: Path
    port: int = field(default_factory=_free_cluster_port)
    process: trio.Process | None = None

    @property
    def address(self) -> Address:
        return ("127.0.0.1", self.port)

    async def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
        cmd += ["--cluster-node-timeout", "15000", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(self.directory)]
        process = await trio.lowlevel.open_process(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.process = process
        assert process.stdout is not None
        out = bytearray()
        with trio.fail_after(STEP):
            while b"Ready to accept connections" not in out:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    await process.wait()
                    raise RuntimeError(out.decode(errors="replace"))
                out += chunk
        await process.stdout.aclose()

    async def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            await self.process.wait()
            self.process = None

    async def state_ok(self) -> bool:
        info = await ask(self.address, "CLUSTER", "INFO")
        return isinstance(info, bytes) and b"cluster_state:ok" in info


@dataclass
class RedisClusterUnderTest:
    nodes: list[ClusterNode]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    async def slot_map(self) -> SlotMap:
        return SlotMap.from_reply(await ask(self.nodes[0].address, "CLUSTER", "SLOTS"), ("", 0))

    def node_at(self, address: Address) -> ClusterNode:
        return next(n for n in self.nodes if n.address == address)

    async def until_ok(self) -> None:
        """Poll `CLUSTER INFO` (other processes' state: no event to wait on) on every node."""
        with trio.fail_after(STEP * 3):
            for node in self.nodes:
                while not await node.state_ok():  # noqa: ASYNC110
                    await trio.sleep(0.05)


async def _start_on_a_free_port(node: ClusterNode) -> None:
    """Start `node`, on another port if another process took its own meanwhile; skip only if
    this redis-server has no cluster mode (any other failure is the test's)."""
    for _ in range(3):
        try:
            return await node.start()
        except RuntimeError as exc:
            if "cluster-enabled" in str(exc) or "cluster support" in str(exc):
                missing(f"redis-server cannot run in cluster mode: {exc}")
            if "Address already in use" not in str(exc):
                raise
            node.port = _free_cluster_port()
    raise RuntimeError("no free port for a cluster node after 3 tries")


@asynccontextmanager
async def open_redis_cluster(
    directory: Path, size: int = 3
) -> AsyncIterator[RedisClusterUnderTest]:
    """`size` primaries holding all 16384 slots, cluster_state:ok on each; killed at the end."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            missing(f"no {tool} on PATH")
    await trio.Path(directory).mkdir(parents=True, exist_ok=True)
    nodes = [ClusterNode(directory) for _ in range(size)]
    try:
        for node in nodes:
            await _start_on_a_free_port(node)
        create = ["redis-cli", "--cluster", "create"]
        create += [f"127.0.0.1:{n.port}" for n in nodes]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        done = await trio.run_process(create, capture_stdout=True, capture_stderr=True, check=False)
        if done.returncode != 0:
            missing(f"redis-cli --cluster create failed: {done.stdout!r} {done.stderr!r}")
        cluster = RedisClusterUnderTest(nodes)
        await cluster.until_ok()
        yield cluster
    finally:
        with trio.CancelScope(shield=True):
            for node in nodes:
                await node.kill()

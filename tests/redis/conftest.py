"""Redis for the shared-state tests: the machine's Redis at 127.0.0.1:6379 (each test under a
namespace of its own, its keys deleted after), or a redis-server of the test's own on a free port
for tests that stop it. Without Redis these tests skip with the reason, except under CI=true,
where a missing Redis fails them."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import pytest
import trio

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: Redis is required)")
    pytest.skip(reason)


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection((REDIS_HOST, port), timeout=1):
            return True
    except OSError:
        return False


class TestLink:
    """A minimal real link: a coredis client to a real redis-server, a namespace, and reconnect
    callbacks the test fires itself (the bus's RedisLink fires them after a reconnect)."""

    __test__ = False

    def __init__(self, client: coredis.Redis[Any], namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.healthy = True
        self._reconnect: list[Callable[[], None]] = []

    def key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._reconnect.append(callback)

    def reconnected(self) -> None:
        for callback in self._reconnect:
            callback()


@pytest.fixture
def redis_links() -> Callable[..., AbstractAsyncContextManager[TestLink]]:
    """`async with open_link(port=6379, namespace=None) as link:` a TestLink; links opened with
    the default namespace share state, like nodes of one deployment. On leaving, the link's
    namespace is deleted (on the machine's Redis; a test's own redis-server just stops)."""
    if not _reachable(REDIS_PORT):
        _missing(f"no Redis at {REDIS_HOST}:{REDIS_PORT}")
    default_ns = f"hibiki-test-{uuid.uuid4().hex[:12]}"

    @asynccontextmanager
    async def open_link(
        port: int = REDIS_PORT, namespace: str | None = None
    ) -> AsyncIterator[TestLink]:
        client: coredis.Redis[Any] = coredis.Redis(
            host=REDIS_HOST,
            port=port,
            decode_responses=True,
            connect_timeout=0.5,
            stream_timeout=1.0,
            retry_policy=coredis.retry.NoRetryPolicy(),
        )
        async with client:
            link = TestLink(client, namespace or default_ns)
            try:
                yield link
            finally:
                if port == REDIS_PORT:
                    with trio.CancelScope(shield=True):
                        keys = [k async for k in client.scan_iter(match=f"{link.namespace}:*")]
                        if keys:
                            await client.delete(keys)

    return open_link


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((REDIS_HOST, 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A redis-server of the test's own, which it may stop and start again (same port)."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self._dir = directory
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", REDIS_HOST]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self._dir)]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        for _ in range(400):  # a synchronous wait: ~ms, once per start
            if _reachable(self.port):
                return
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            time.sleep(0.025)
        raise RuntimeError("redis-server did not start listening")

    def pause(self) -> None:
        """SIGSTOP: it keeps every TCP connection open and answers nothing (a hung Redis)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        _missing("redis-server is not installed")
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        # coredis 6.9 leaves the anyio memory streams of a failed connection attempt to the
        # garbage collector (ResourceWarning "Unclosed <MemoryObject...>"): not ours to close.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()

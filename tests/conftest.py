"""Shared fixtures: a real hibiki server on 127.0.0.1 (ephemeral port, SQLite file in tmp_path)
and real clients: httpx for the HTTP API, trio-websocket for the chat protocol."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection

from client import open_websocket
from server.app import serve
from server.config import Config

from .postgres import postgres_url, reused_databases

# A fresh PostgreSQL database per test, and the test process's lent ones (tests/postgres.py).
__all__ = ["postgres_url", "reused_databases"]

STEP = 10.0  # generous bound for one step of a test on a loaded 2-core machine

# The servers these tests start on PostgreSQL (subprocesses inherit the environment) open three
# pool connections each instead of the default ten: two test workers running multi-node and
# sharded tests at once then stay well inside the server's max_connections (100).
os.environ.setdefault("HIBIKI_POOL_SIZE", "3")


# The order tests are handed to the two workers in. pytest-xdist's worksteal gives each worker
# one half of the list (by count) and an idle worker steals the tail of the other's queue, so a
# worker's last tests are the end of a half: each half starts with its directories of tests of
# several seconds (clusters, benchmark smoke tests, browsers, shard moves) and ends with many
# short ones, so no long test is left to run alone at the end. Modules stay whole and in order.
ORDER = (
    *("cluster", "scripts", "e2e", "redis", "events", "routing", "server"),  # ~half the tests
    *("clients", "shards", "migrate", "storage", "protocol"),
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        top = item.path.relative_to(Path(__file__).parent).parts[0]
        return ORDER.index(top) if top in ORDER else ORDER.index("server")

    items.sort(key=rank)  # stable: each module's tests keep their order


@dataclass
class RunningServer:
    config: Config
    port: int
    stop: trio.Event
    done: trio.Event

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@dataclass
class Account:
    name: str
    token: str


@dataclass
class Peer:
    """One WebSocket client speaking protocol v1, with a little bookkeeping for assertions."""

    ws: WebSocketConnection
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, **frame: Any) -> None:
        await self.ws.send_message(json.dumps(frame))

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(STEP):
            event: dict[str, Any] = json.loads(await self.ws.get_message())
        self.seen.append(event)
        return event

    async def expect(
        self, type_: str, *, skip: tuple[str, ...] = ("presence", "typing")
    ) -> dict[str, Any]:
        """The next event, which must be of `type_` (events of the `skip` types are passed over)."""
        while True:
            event = await self.recv()
            if event["type"] in skip and type_ not in skip:
                continue
            assert event["type"] == type_, event
            return event


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    """A test server's config; `overrides` by flat setting name (`rate_burst=2`)."""
    base = {
        "port": 0,
        "db_path": str(tmp_path / "hibiki.db"),
        "scrypt_n": 2**10,
        "server_id": "test",
    }
    return Config.from_flat(**(base | overrides))


@asynccontextmanager
async def running_server(config: Config) -> AsyncIterator[RunningServer]:
    async with trio.open_nursery() as nursery:
        stop, done = trio.Event(), trio.Event()

        async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await serve(config, stop, task_status=task_status)
            finally:
                done.set()

        port = await nursery.start(run)
        handle = RunningServer(config, port, stop, done)
        try:
            yield handle
        finally:
            stop.set()
            with trio.fail_after(STEP + config.timeouts.drain_timeout):
                await done.wait()


@pytest.fixture
def server_config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def server(server_config: Config) -> AsyncIterator[RunningServer]:
    async with running_server(server_config) as handle:
        yield handle


_names = itertools.count()


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http, timeout=STEP) as client:
        yield client


async def register(http: httpx.AsyncClient, name: str | None = None) -> Account:
    name = name or f"user{next(_names)}-{os.getpid()}"
    response = await http.post("/api/register", json={"name": name, "password": "correct horse"})
    assert response.status_code == 201, response.text
    return Account(name, response.json()["token"])


async def create_room(http: httpx.AsyncClient, owner: Account, room: str) -> None:
    response = await http.post(
        "/api/rooms", json={"name": room}, headers={"Authorization": f"Bearer {owner.token}"}
    )
    assert response.status_code == 201, response.text


async def join_room(http: httpx.AsyncClient, user: Account, room: str) -> None:
    response = await http.post(
        f"/api/rooms/{room}/join", headers={"Authorization": f"Bearer {user.token}"}
    )
    assert response.status_code == 200, response.text


Connect = Callable[..., Any]


@pytest.fixture
async def connect(server: RunningServer) -> AsyncIterator[Connect]:
    """`async with connect(account, resume=...) as peer` — a peer that has said hello."""

    @asynccontextmanager
    async def _connect(
        account: Account | None = None, *, resume: dict[str, int] | None = None
    ) -> AsyncIterator[Peer]:
        async with open_websocket(server.ws) as ws:
            peer = Peer(ws)
            if account is not None:
                hello: dict[str, Any] = {"type": "hello", "token": account.token}
                if resume is not None:
                    hello["resume"] = resume
                await peer.send(**hello)
                welcome = await peer.expect("welcome")
                assert welcome["user"] == account.name
            yield peer

    yield _connect

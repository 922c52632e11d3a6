"""GET /metrics: every metric is exported, and moves when its event happens (real server)."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, WebSocketConnection

from client import open_websocket
from protocol import CloseCode
from server.app import serve
from server.chat.registry import ConnectionRegistry
from server.config import Config
from server.fanout.hub import RoomHub
from server.ops.metrics import CLOSE_REASONS, DB_BUCKETS, Metrics, close_label, query_types
from server.persist.writer import MessageWriter, PendingSend
from server.transport.flusher import Flusher
from server.transport.frames import text_frame
from storage import NewMessage

from ..conftest import STEP, Account, create_room, join_room, make_config, register
from ..connections import chat_connection
from ..rawws import RawWs

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class _Run:
    port: int
    http: httpx.AsyncClient
    metrics: Metrics
    stop: trio.Event


@asynccontextmanager
async def _server(tmp_path: Path, **overrides: Any) -> AsyncIterator[_Run]:
    """A real server run with a `Metrics` the test keeps, so it can be read after shutdown too."""
    config = make_config(tmp_path, **overrides)
    metrics = Metrics(config.server.server_id)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve, config, stop, metrics=metrics))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=STEP) as c:
                yield _Run(port, c, metrics, stop)
        finally:
            stop.set()


async def _scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return _parse(response.text)


def _parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def _eventually(http: httpx.AsyncClient, check: Callable[[Samples], bool]) -> Samples:
    """Scrape until `check` holds (the server updates some state after the client sees a close)."""
    with trio.fail_after(STEP):
        while True:
            samples = await _scrape(http)
            if check(samples):
                return samples
            await trio.sleep(0.01)


@asynccontextmanager
async def _chat(port: int, account: Account) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send_message(json.dumps({"type": "hello", "token": account.token}))
        await _expect(ws, "welcome")
        yield ws


async def _expect(ws: WebSocketConnection, type_: str) -> dict[str, Any]:
    with trio.fail_after(STEP):
        while True:
            event: dict[str, Any] = json.loads(await ws.get_message())
            if event["type"] == type_:
                return event


async def _send(ws: WebSocketConnection, room: str, text: str) -> dict[str, Any]:
    await ws.send_message(json.dumps({"type": "send", "room": room, "text": text}))
    return await _expect(ws, "ack")


async def test_every_metric_is_exported_with_the_seed_names_and_buckets(tmp_path: Path) -> None:
    async with _server(tmp_path) as run:
        http = run.http
        samples = await _scrape(http)
    names = {name for name, _ in samples}
    assert _value(samples, "websocket_active_connections", server_id="test") == 0
    assert _value(samples, "messages_total", server_id="test") == 0
    for query_type in query_types():
        les = {
            dict(labels)["le"]
            for name, labels in samples
            if name == "db_query_duration_seconds_bucket"
            and dict(labels)["query_type"] == query_type
        }
        assert les == {repr(b) for b in DB_BUCKETS} | {"+Inf"}
    expected = {
        "hibiki_deliveries_total",
        "hibiki_send_latency_seconds_bucket",
        "hibiki_fanout_duration_seconds_bucket",
        "hibiki_writer_batch_size_bucket",
        "hibiki_writer_commit_duration_seconds_bucket",
        "hibiki_writer_commit_failures_total",
        "hibiki_writer_queue_depth",
        "hibiki_writer_queue_capacity",
        "hibiki_outbound_buffer_bytes",
        "hibiki_outbound_buffer_max_bytes",
        "hibiki_connections_opened_total",
        "hibiki_connections_closed_total",
        "hibiki_rate_limited_total",
        "hibiki_cache_hits_total",
        "hibiki_cache_misses_total",
        "hibiki_auth_failures_total",
    }
    assert expected <= names, expected - names
    for reason in CLOSE_REASONS:
        assert _value(samples, "hibiki_connections_closed_total", reason=reason) == 0
    assert _value(samples, "hibiki_writer_queue_capacity") == Config().limits.writer_queue


async def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    async with _server(tmp_path, metrics=False) as run:
        http = run.http
        assert (await http.get("/metrics")).status_code == 404


async def test_active_connections_gauge_follows_connections(tmp_path: Path) -> None:
    async with _server(tmp_path) as run:
        port, http = run.port, run.http
        alice = await register(http)
        async with _chat(port, alice):
            samples = await _scrape(http)
            assert _value(samples, "websocket_active_connections", server_id="test") == 1
            assert _value(samples, "hibiki_connections_opened_total") == 1
        await _eventually(
            http, lambda s: _value(s, "websocket_active_connections", server_id="test") == 0
        )


async def test_a_connection_counts_as_active_until_its_close_handshake_ends(
    tmp_path: Path,
) -> None:
    def active(samples: Samples) -> float:
        return _value(samples, "websocket_active_connections", server_id="test")

    async with _server(tmp_path, close_timeout=STEP * 2) as run:
        raw = await RawWs.connect(run.port)
        await raw.read_response_head()
        await _eventually(run.http, lambda s: active(s) == 1)
        await raw.send_frame(b"x", opcode=0x3)  # a reserved opcode: the server closes 1002
        assert await raw.read_until_close() == CloseCode.PROTOCOL_ERROR
        assert await raw.read_frame() is None  # the server half-closed: it waits for our EOF
        samples = await _scrape(run.http)
        assert active(samples) == 1  # still open: its close handshake has not ended
        assert _value(samples, "hibiki_connections_closed_total", reason="protocol_error") == 1
        await raw.aclose()
        await _eventually(run.http, lambda s: active(s) == 0)


async def test_a_send_moves_message_writer_and_db_metrics(tmp_path: Path) -> None:
    async with _server(tmp_path) as run:
        port, http = run.port, run.http
        alice = await register(http)
        await create_room(http, alice, "r")
        async with _chat(port, alice) as ws:
            before = await _scrape(http)
            await _send(ws, "r", "hello")
            after = await _scrape(http)

        def delta(name: str, **labels: str) -> float:
            return _value(after, name, **labels) - _value(before, name, **labels)

        assert delta("messages_total", server_id="test") == 1
        assert delta("hibiki_writer_batch_size_count") == 1
        assert delta("hibiki_writer_batch_size_sum") == 1
        assert delta("hibiki_writer_commit_duration_seconds_count") == 1
        assert delta("hibiki_fanout_duration_seconds_count") == 1
        assert delta("db_query_duration_seconds_count", query_type="append_batch") == 1
        assert delta("db_query_duration_seconds_sum", query_type="append_batch") > 0
        # On the event loop unless the readiness probe held the lock then (storage tests pin it).
        commits = "hibiki_sqlite_commits_total"
        assert delta(commits, thread="event_loop") + delta(commits, thread="writer") == 1

        headers = {"Authorization": f"Bearer {alice.token}"}
        body = {"messages": [{"text": "a"}, {"text": "b"}]}
        response = await http.post("/api/rooms/r/messages:batch", json=body, headers=headers)
        assert response.status_code == 201
        samples = await _scrape(http)
        assert _value(samples, "messages_total", server_id="test") == 3


async def test_http_auth_failures_are_counted_by_kind(tmp_path: Path) -> None:
    async with _server(tmp_path) as run:
        http = run.http
        alice = await register(http)
        await http.post("/api/login", json={"name": alice.name, "password": "not the one"})
        await http.get("/api/me")
        await http.get("/api/me", headers={"Authorization": "Bearer nope"})
        samples = await _scrape(http)
    assert _value(samples, "hibiki_auth_failures_total", kind="password") == 1
    assert _value(samples, "hibiki_auth_failures_total", kind="token") == 2


async def test_membership_cache_hits_and_misses(tmp_path: Path) -> None:
    async with _server(tmp_path) as run:
        port, http = run.port, run.http
        alice, bob = await register(http), await register(http)
        await create_room(http, alice, "mine")
        await create_room(http, bob, "later")
        async with _chat(port, alice) as ws:
            before = await _scrape(http)
            await _send(ws, "mine", "cached by hello")
            await ws.send_message(json.dumps({"type": "send", "room": "later", "text": "no"}))
            assert (await _expect(ws, "error"))["code"] == "not_member"  # looked up: a miss
            await join_room(http, alice, "later")  # tells the cache: no lookup needed
            await _send(ws, "later", "cached by the join")
            after = await _scrape(http)
    hits = "hibiki_cache_hits_total"
    misses = "hibiki_cache_misses_total"
    assert _value(after, hits, cache="membership") - _value(before, hits, cache="membership") == 2
    assert (
        _value(after, misses, cache="membership") - _value(before, misses, cache="membership") == 1
    )


async def test_connections_closed_are_counted_by_reason(tmp_path: Path) -> None:
    overrides = {"max_protocol_errors": 1, "heartbeat_interval": 0.2, "heartbeat_deadline": 0.3}
    async with _server(tmp_path, **overrides) as run:
        port, http = run.port, run.http
        alice = await register(http)
        async with _chat(port, alice):
            pass  # client_close
        async with open_websocket(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send_message(json.dumps({"type": "hello", "token": "bogus"}))
            await _closed_with(ws, CloseCode.UNAUTHENTICATED)
        async with _chat(port, alice) as ws:
            await ws.send_message("not json")
            await _closed_with(ws, CloseCode.POLICY)
        raw = await RawWs.connect(port)  # never answers pings: stale
        assert b" 101 " in await raw.read_response_head()
        await raw.send_frame(json.dumps({"type": "hello", "token": alice.token}).encode())
        with trio.fail_after(STEP):
            assert await raw.read_until_close() == CloseCode.STALE
        await raw.aclose()
        expected = {"client_close": 1, "unauthenticated": 1, "protocol_error": 1, "stale": 1}
        await _eventually(
            http,
            lambda s: all(
                _value(s, "hibiki_connections_closed_total", reason=r) == n
                for r, n in expected.items()
            ),
        )
        async with _chat(port, alice) as ws:
            run.stop.set()
            await _closed_with(ws, CloseCode.GOING_AWAY)
    # Read after the server has stopped: the last connection was closed by the shutdown.
    assert run.metrics.connections_closed == dict.fromkeys(CLOSE_REASONS, 0) | expected | {
        "shutdown": 1
    }


@pytest.mark.parametrize("code", [1011, 4008])
async def test_a_clients_own_error_close_is_counted_and_logged_as_the_clients(
    tmp_path: Path, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="server.chat.websocket")
    closed = "hibiki_connections_closed_total"
    async with _server(tmp_path) as run:
        alice = await register(run.http)
        async with _chat(run.port, alice) as ws:
            await ws.aclose(code=code, reason="client trouble")
        samples = await _eventually(
            run.http, lambda s: sum(_value(s, closed, reason=r) for r in CLOSE_REASONS) == 1
        )
        assert _value(samples, closed, reason="client_close") == 1
        assert _value(samples, closed, reason="internal") == 0
        assert _value(samples, closed, reason="slow_consumer") == 0
    # After the server stopped: every "connection closed" line has been written.
    (line,) = [r for r in caplog.records if r.getMessage() == "connection closed"]
    assert (line.__dict__["code"], line.__dict__["cause"]) == (code, "client_close")


async def _closed_with(ws: WebSocketConnection, code: int) -> None:
    with trio.fail_after(STEP), pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    reason = closed.value.reason
    assert reason is not None and reason.code == code


@pytest.mark.parametrize(
    ("code", "draining", "label"),
    [
        (1000, False, "client_close"),
        (1001, False, "client_close"),  # the peer went away
        (1001, True, "shutdown"),
        (1006, False, "transport_error"),
        (None, True, "shutdown"),
        (None, False, "unknown"),
        (1002, False, "protocol_error"),
        (1008, False, "protocol_error"),
        (1009, False, "protocol_error"),
        (1011, False, "internal"),
        (4001, False, "unauthenticated"),
        (4003, False, "stale"),
        (4008, False, "slow_consumer"),
        (3000, False, "client_close"),  # a code of the peer's own
    ],
)
def test_close_codes_map_to_bounded_reasons(code: int | None, draining: bool, label: str) -> None:
    assert close_label(code, draining) == label
    assert label in CLOSE_REASONS


@pytest.mark.parametrize("draining", [False, True])
def test_a_close_the_peer_started_is_the_clients_whatever_its_code(draining: bool) -> None:
    for code in (1000, 1001, 1002, 1008, 1011, 4001, 4003, 4008, 3000):
        assert close_label(code, draining, by_peer=True) == "client_close"


async def test_queue_depth_and_blocked_backlog_gauges_read_live_state() -> None:
    """A writer that is not running keeps what is submitted; a peer that does not read blocks."""
    metrics = Metrics("unit")
    flusher = Flusher()
    registry = ConnectionRegistry(metrics)
    hub = RoomHub(flusher)
    writer = MessageWriter(None, hub, queue_size=10, max_batch=10)  # type: ignore[arg-type]
    metrics.watch(
        connections=registry,
        hub=hub,
        flusher=flusher,
        writer=writer,
        writer_capacity=10,
        caches={},
    )
    for i in range(3):
        await writer.submit(PendingSend(NewMessage("r", 1, "u", str(i), None), None, None))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        async with trio.open_nursery() as nursery:
            await nursery.start(flusher.run)
            conn = chat_connection(ours, flusher, 1 << 30)
            registry.add(conn)
            conn.enqueue(text_frame(b"x" * (4 << 20)))  # more than the socket buffers
            await trio.testing.wait_all_tasks_blocked()
            assert conn.out.blocked and conn.pending_bytes > 0
            samples = _parse(metrics.exposition()[0].decode())
            nursery.cancel_scope.cancel()
    assert _value(samples, "hibiki_writer_queue_depth") == 3
    assert _value(samples, "hibiki_outbound_buffer_bytes") == conn.pending_bytes
    assert _value(samples, "hibiki_outbound_buffer_max_bytes") == conn.pending_bytes
    assert _value(samples, "hibiki_blocked_writers") == 1
    assert 0 < _value(samples, "hibiki_websocket_sent_bytes_total") < 4 << 20
    assert _value(samples, "websocket_active_connections", server_id="unit") == 1


async def test_deliveries_count_each_frame_queued_to_a_subscriber(tmp_path: Path) -> None:
    async with _server(tmp_path) as run:
        port, http = run.port, run.http
        alice, bob = await register(http), await register(http)
        await create_room(http, alice, "r")
        await join_room(http, bob, "r")
        async with _chat(port, alice) as a, _chat(port, bob) as b:
            await _expect(a, "presence")  # bob came online: settle before counting
            before = await _scrape(http)
            await _send(a, "r", "to both")
            await _expect(b, "message")
            after = await _scrape(http)
    name = "hibiki_deliveries_total"
    assert _value(after, name) - _value(before, name) == 2


# Hooks in the hot-path files (session): these flip to passing once they are wired. -----------


async def test_send_latency_is_observed_per_batch(tmp_path: Path) -> None:
    async with _server(tmp_path) as run:
        alice = await register(run.http)
        await create_room(run.http, alice, "r")
        async with _chat(run.port, alice) as ws:
            await _send(ws, "r", "hello")
            samples = await _scrape(run.http)
    assert _value(samples, "hibiki_send_latency_seconds_count") == 1
    assert _value(samples, "hibiki_send_latency_seconds_sum") > 0


async def test_rate_limited_requests_are_counted(tmp_path: Path) -> None:
    async with _server(tmp_path, rate_per_second=0.01, rate_burst=1) as run:
        port, http = run.port, run.http
        alice = await register(http)
        await create_room(http, alice, "r")
        async with _chat(port, alice) as ws:
            await _send(ws, "r", "allowed")
            await ws.send_message(json.dumps({"type": "send", "room": "r", "text": "too fast"}))
            error = await _expect(ws, "error")
            assert error["code"] == "rate_limited"
            samples = await _scrape(http)
    assert _value(samples, "hibiki_rate_limited_total") == 1


async def test_a_bad_token_in_hello_is_an_auth_failure(tmp_path: Path) -> None:
    async with _server(tmp_path) as run:
        port, http = run.port, run.http
        async with open_websocket(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send_message(json.dumps({"type": "hello", "token": "bogus"}))
            await _closed_with(ws, CloseCode.UNAUTHENTICATED)
        samples = await _scrape(http)
    assert _value(samples, "hibiki_auth_failures_total", kind="token") == 1

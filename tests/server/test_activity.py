"""ActivityRecorder (issue #15): sessions' last use and users' last_seen reach the store in
batches: one write per interval however many requests and connections, at once when a user's
last connection closes, and once more as it stops. The store here only records the calls it
gets (the recorder is what is under test; the store's side is the contract suite's)."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import trio
import trio.testing

from server.chat.activity import CHUNK_ROWS, ActivityRecorder
from server.chat.connection import ChatConnection, ConnState
from server.chat.user_connections import LocalUserConnections
from server.transport.flusher import Flusher
from storage import StorageError

from ..connections import chat_connection

INTERVAL = 60.0


class _Calls:
    """`record_activity` only: each call's arguments, in order; fails while `failing`."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, int], dict[int, int]]] = []
        self.failing = False
        self.called = trio.Event()

    async def record_activity(self, sessions: Mapping[str, int], users: Mapping[int, int]) -> None:
        await trio.lowlevel.checkpoint()
        self.called.set()
        self.called = trio.Event()
        if self.failing:
            raise StorageError("disk full")
        self.calls.append((dict(sessions), dict(users)))


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


@contextmanager
def _open(user_id: int, token: str) -> Iterator[ChatConnection]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        conn = chat_connection(ours, Flusher(), 1 << 20)
        conn.user_id, conn.token_hash = user_id, token
        conn.set_state(ConnState.OPEN)
        yield conn


def _recorder(
    store: _Calls, conns: list[ChatConnection], users: LocalUserConnections, clock: _Clock
) -> ActivityRecorder:
    return ActivityRecorder(
        store,  # type: ignore[arg-type]
        lambda: conns,
        users,
        interval=INTERVAL,
        clock_ms=clock,
    )


async def test_requests_are_recorded_once_per_interval_in_one_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, clock = _Calls(), _Clock()
    recorder = _recorder(store, [], LocalUserConnections(), clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder.run)
        for _ in range(1000):
            recorder.seen(7, "h7")
        clock.now = 2_000
        await trio.sleep(INTERVAL / 2)
        recorder.seen(7, "h7")  # within the interval of the first: not again
        recorder.seen(8, "h8")
        await trio.sleep(INTERVAL / 2 + 1)
        assert store.calls == [({"h7": 1_000, "h8": 2_000}, {7: 1_000, 8: 2_000})]
        clock.now = 3_000
        recorder.seen(7, "h7")  # an interval on: recorded again
        await trio.sleep(INTERVAL)
        assert store.calls[1:] == [({"h7": 3_000}, {7: 3_000})]
        nursery.cancel_scope.cancel()
    assert recorder.writes == 2


async def test_open_connections_are_recorded_each_interval_and_the_last_close_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, clock, users = _Calls(), _Clock(), LocalUserConnections()
    with _open(1, "a") as first, _open(1, "b") as second:
        conns = [first, second]
        recorder = _recorder(store, conns, users, clock)
        for conn in conns:
            users.add(conn)
        async with trio.open_nursery() as nursery:
            await nursery.start(recorder.run)
            await trio.sleep(INTERVAL + 1)
            assert store.calls == [({"a": 1_000, "b": 1_000}, {1: 1_000})]
            clock.now = 5_000
            users.discard(first)  # as the session releases it; then the registry tells
            conns.remove(first)
            recorder.connection_closed(first)  # not the user's last: waits for the interval
            clock.now = 6_000
            users.discard(second)
            conns.remove(second)
            start = trio.current_time()
            recorder.connection_closed(second)  # the last: written now
            await store.called.wait()
            assert trio.current_time() - start < 1.0
            assert store.calls[1] == ({"a": 5_000, "b": 6_000}, {1: 6_000})
            nursery.cancel_scope.cancel()


async def test_what_waits_is_written_as_the_recorder_stops_and_failures_are_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, clock = _Calls(), _Clock()
    recorder = _recorder(store, [], LocalUserConnections(), clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder.run)
        store.failing = True
        recorder.seen(1, "x")
        await trio.sleep(INTERVAL + 1)  # failed: logged, dropped, the recorder keeps running
        store.failing = False
        recorder.seen(2, "y")
        nursery.cancel_scope.cancel()
    assert store.calls == [({"y": 1_000}, {2: 1_000})]
    assert recorder.writes == 2


async def test_a_large_flush_is_cut_into_store_calls_of_at_most_chunk_rows() -> None:
    store, clock = _Calls(), _Clock()
    recorder = _recorder(store, [], LocalUserConnections(), clock)
    for user in range(1, 1501):
        recorder.seen(user, f"h{user}")
    await recorder.flush()
    sizes = [len(sessions) + len(users) for sessions, users in store.calls]
    assert sizes == [CHUNK_ROWS, CHUNK_ROWS, 3000 - 2 * CHUNK_ROWS]
    assert {h for sessions, _ in store.calls for h in sessions} == {f"h{u}" for u in range(1, 1501)}
    assert {u for _, users in store.calls for u in users} == set(range(1, 1501))
    await recorder.flush()  # nothing waits: no call
    assert len(store.calls) == 3

"""Property: whatever the kernel takes per send and whenever a slow consumer is cut off, the
bytes that reach the peer are whole frames, in the order they were queued, ending with the close.

The real `Flusher`, `RoomHub` and `ChatConnection` run against a fake socket (the dependency, not
the thing under test) whose sends take a chosen number of bytes; its `fileno` is a real socket
that is made unwritable whenever that room runs out, so the flusher's writer task really waits.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import CloseCode
from server.chat.connection import ConnState
from server.fanout.hub import RoomHub
from server.transport.flusher import Flusher
from server.transport.frames import text_frame

from ..conftest import STEP
from ..connections import chat_connection
from ..rawws import parse_frames


class FakeKernel:
    """`send`/`sendmsg` take at most `room` bytes and record them; with no room left they raise
    `BlockingIOError` and `fileno()` (a real socketpair end) stops being writable."""

    def __init__(self) -> None:
        self.gate, self._gate_peer = socket.socketpair()
        self.gate.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.gate.setblocking(False)
        self._gate_peer.setblocking(False)
        self.wire = bytearray()
        self.room = 0
        self._shut()

    def fileno(self) -> int:
        return self.gate.fileno()

    def send(self, data: bytes) -> int:
        return self.sendmsg([data])

    def sendmsg(self, buffers: Sequence[Any]) -> int:
        if self.room == 0:
            self._shut()
            raise BlockingIOError
        taken = 0
        for buffer in buffers:
            chunk = bytes(buffer[: self.room - taken])
            self.wire += chunk
            taken += len(chunk)
            if taken == self.room:
                break
        self.room -= taken
        if self.room == 0:
            self._shut()
        return taken

    def make_room(self, size: int) -> None:
        self.room = size
        if not size:
            return
        with contextlib.suppress(BlockingIOError):
            while self._gate_peer.recv(1 << 16):
                pass

    def _shut(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.gate.send(b"\0" * 4096)

    def close(self) -> None:
        self.gate.close()
        self._gate_peer.close()


@dataclass
class Model:
    """What the peer should see: the queued payloads in backlog order (a room's publishes within
    one flush cycle share one segment, which sits where the cycle's first publish put it)."""

    items: list[list[bytes]] = field(default_factory=list)
    segment: list[bytes] | None = None

    def frame(self, payload: bytes) -> None:
        self.items.append([payload])

    def publish(self, payload: bytes) -> None:
        if self.segment is None:
            self.segment = []
            self.items.append(self.segment)
        self.segment.append(payload)

    def cycle(self) -> None:
        self.segment = None

    def payloads(self) -> Iterator[bytes]:
        for item in self.items:
            yield from item


# Payload sizes that give all three header lengths (7-bit, 16-bit and 64-bit).
sizes = st.one_of(
    st.integers(0, 130), st.integers(65530, 65540), st.integers(126, 3000), st.just(70_000)
)
# How many bytes the kernel takes in one cycle: none, a few (cuts inside headers), or a lot.
rooms = st.one_of(st.integers(0, 12), st.integers(0, 400), st.integers(0, 150_000))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("frame"), sizes),
        st.tuples(st.just("publish"), sizes),
        st.tuples(st.just("cycle"), rooms),
        st.tuples(st.just("close"), st.just(0)),
    ),
    max_size=25,
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=ops,
    fill=st.integers(0, 255),
    limit=st.one_of(st.just(1 << 30), st.integers(1, 200_000)),
)
async def test_peer_receives_whole_frames_in_order_ending_with_the_close(
    ops: list[tuple[str, int]], fill: int, limit: int
) -> None:
    kernel = FakeKernel()
    model = Model()
    try:
        with trio.fail_after(STEP):
            async with trio.open_nursery() as nursery:
                flusher = Flusher()
                await nursery.start(flusher.run)
                conn = chat_connection(cast(socket.socket, kernel), flusher, limit)
                conn.user_name = "peer"
                conn.set_state(ConnState.OPEN)
                hub = RoomHub(flusher)
                hub.subscribe("r", conn)
                for n, (op, arg) in enumerate(ops):
                    payload = bytes([fill, n & 0xFF]) + bytes([fill]) * max(arg - 2, 0)
                    payload = payload[:arg]
                    if op == "frame":
                        if not conn.closing:
                            model.frame(payload)
                        conn.enqueue(text_frame(payload))
                    elif op == "publish":
                        if not conn.closing:
                            model.publish(payload)
                        hub.publish("r", text_frame(payload), n)
                    elif op == "cycle":
                        kernel.make_room(arg)
                        await trio.testing.wait_all_tasks_blocked()
                        model.cycle()
                    else:
                        conn.close(CloseCode.SLOW_CONSUMER, "slow consumer", discard_backlog=True)
                for _ in range(10):  # the peer now reads everything
                    kernel.make_room(1 << 40)
                    await trio.testing.wait_all_tasks_blocked()
                    if not conn.out.items and not conn.out.blocked:
                        break
                assert not conn.out.items and not conn.out.blocked
                nursery.cancel_scope.cancel()
    finally:
        kernel.close()
    frames = parse_frames(bytes(kernel.wire))
    data = [payload for opcode, payload in frames if opcode == 0x1]
    expected = list(model.payloads())
    if conn.closing:
        assert frames, "nothing was sent, not even the close frame"
        opcode, payload = frames[-1]
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == CloseCode.SLOW_CONSUMER
        assert [op for op, _ in frames].count(0x8) == 1
        assert data == expected[: len(data)], "the frames sent are not a prefix of those queued"
    else:
        assert data == expected

"""The fan-out mechanics on real socket pairs: shared room segments, one flush per cycle, and
a slow consumer's backlog cut on a frame boundary."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
import trio
import trio.testing

from protocol import CloseCode
from server.chat.connection import ChatConnection, ConnState
from server.fanout.hub import RoomHub
from server.transport.flusher import Flusher
from server.transport.frames import close_frame, text_frame
from server.transport.outbound import Segment

from ..conftest import STEP
from ..connections import chat_connection


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """Parse unmasked server frames: (opcode, payload) each."""
    out, i = [], 0
    while i < len(data):
        opcode, n, i = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if n == 126:
            n, i = int.from_bytes(data[i : i + 2], "big"), i + 2
        elif n == 127:
            n, i = int.from_bytes(data[i : i + 8], "big"), i + 8
        out.append((opcode, data[i : i + n]))
        i += n
    assert i == len(data), "a frame was cut"
    return out


@pytest.fixture
async def flusher() -> AsyncIterator[Flusher]:
    flusher = Flusher()
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        yield flusher
        nursery.cancel_scope.cancel()


_open_sockets: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _open_sockets:
        _open_sockets.pop().close()


def _peer(
    flusher: Flusher, name: str, limit: int = 1 << 20
) -> tuple[ChatConnection, socket.socket]:
    ours, theirs = socket.socketpair()
    _open_sockets.extend((ours, theirs))
    ours.setblocking(False)
    conn = chat_connection(ours, flusher, limit)
    conn.user_name = name
    conn.set_state(ConnState.OPEN)
    return conn, theirs


async def _read_all(sock: socket.socket, size: int) -> bytes:
    data = b""
    with trio.fail_after(STEP):
        while len(data) < size:
            await trio.lowlevel.wait_readable(sock)
            data += sock.recv(1 << 20)
    return data


def _sock_nonblocking(sock: socket.socket) -> socket.socket:
    sock.setblocking(False)
    return sock


async def test_subscribers_of_a_room_share_one_segment_per_cycle(flusher: Flusher) -> None:
    hub = RoomHub(flusher)
    a, a_peer = _peer(flusher, "a")
    b, b_peer = _peer(flusher, "b")
    hub.subscribe("r", a)
    hub.subscribe("r", b)
    await trio.testing.wait_all_tasks_blocked()
    for peer in (a_peer, b_peer):  # drop the presence frames
        _sock_nonblocking(peer)
        with contextlib.suppress(BlockingIOError):
            peer.recv(1 << 16)
    frames = [text_frame(b'{"n":%d}' % i) for i in range(3)]
    for seq, frame in enumerate(frames, 1):
        hub.publish("r", frame, seq)
    assert (
        a.out.items == b.out.items and len(a.out.items) == 1
    )  # one shared segment, not 3 frames each
    assert a.out.items[0] is b.out.items[0]
    await trio.testing.wait_all_tasks_blocked()
    expected = b"".join(frames)
    assert await _read_all(a_peer, len(expected)) == expected
    assert await _read_all(b_peer, len(expected)) == expected
    assert hub.deliveries >= 6


async def test_a_new_subscriber_gets_only_what_is_published_after_it_joins(
    flusher: Flusher,
) -> None:
    hub = RoomHub(flusher)
    a, a_peer = _peer(flusher, "a")
    hub.subscribe("r", a)
    hub.publish("r", text_frame(b"before"), 1)
    b, b_peer = _peer(flusher, "b")
    hub.subscribe("r", b)  # mid-cycle: the open segment must not be shared with b
    hub.publish("r", text_frame(b"after"), 2)
    await trio.testing.wait_all_tasks_blocked()
    got_b = _frames(await _read_all(_sock_nonblocking(b_peer), len(text_frame(b"after"))))
    assert [p for _, p in got_b] == [b"after"]
    wanted = len(text_frame(b"before")) + len(text_frame(b"after"))
    # a also got b's presence frame, between the two.
    raw_a = await _read_all(_sock_nonblocking(a_peer), wanted)
    got_a = [p for _, p in _frames(raw_a)]
    assert [p for p in got_a if p in (b"before", b"after")] == [b"before", b"after"]
    assert got_a[0] == b"before" and got_a[-1] == b"after"


async def test_a_partial_send_keeps_whole_items_and_how_much_of_the_first_is_written() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        buf = chat_connection(ours, Flusher(), 1 << 20).out
        frames = [text_frame(b"a" * 10), text_frame(b"b" * 10), text_frame(b"c" * 10)]
        buf.items = list(frames)
        buf.counted = 3
        buf.took([12, 12, 12], 12 + 5)  # five bytes into the second frame
        assert buf.items == frames[1:] and buf.head_sent == 5 and buf.counted == 2
        buf.took([12, 12], 7)  # the rest of it: now exactly on a frame boundary
        assert buf.items == frames[2:] and buf.head_sent == 0 and buf.counted == 1


async def test_cut_off_keeps_only_the_rest_of_the_frame_partly_written_in_a_segment() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn = chat_connection(ours, Flusher(), 1 << 20)
        conn.set_state(ConnState.OPEN)
        segment = Segment()
        segment.frames = [text_frame(b"a" * 10), text_frame(b"b" * 200), text_frame(b"c")]
        data = segment.seal()
        conn.out.items = [segment, text_frame(b"later")]
        conn.out.blocked = True  # its writer task owns the socket: close only queues
        conn.out.head_sent = 12 + 5  # five bytes into the second frame (a 16-bit length header)
        conn.close(CloseCode.SLOW_CONSUMER, "slow consumer", discard_backlog=True)
        close = close_frame(CloseCode.SLOW_CONSUMER, "slow consumer")
        assert conn.out.items == [data[17 : 12 + 204], close] and conn.out.head_sent == 0
        assert conn.pending_bytes == 204 - 5 and conn.out.counted == 1


async def test_slow_consumer_is_closed_after_finishing_the_frame_on_the_wire(
    flusher: Flusher,
) -> None:
    hub = RoomHub(flusher)
    slow, slow_peer = _peer(flusher, "slow", limit=256 * 1024)
    slow_peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hub.subscribe("r", slow)
    big = text_frame(b"x" * 3000)
    with trio.fail_after(STEP):
        while not slow.closing:  # the peer never reads: its backlog grows past the bound
            hub.publish("r", big, 0)
            await trio.testing.wait_all_tasks_blocked()
    assert slow.close_code == CloseCode.SLOW_CONSUMER
    # Reading now, the peer sees whole frames ending with the 4008 close frame.
    _sock_nonblocking(slow_peer)
    data = b""
    with trio.fail_after(STEP):
        while not data.endswith(b"slow consumer"):
            await trio.lowlevel.wait_readable(slow_peer)
            data += slow_peer.recv(1 << 20)
    frames = _frames(data)
    opcode, payload = frames[-1]
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == CloseCode.SLOW_CONSUMER
    assert all(op in (0x1, 0x8) for op, _ in frames)


async def test_with_lead_rounds_a_task_woken_with_the_sweep_sends_first() -> None:
    """The Redis bus's sender takes two rounds from its wake-up to its send; a flusher with
    `lead_rounds=2` sweeps only after that, every time (trio's order within a round is random,
    so with 0 the sweep goes first about half the time)."""
    flusher = Flusher(lead_rounds=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        conn, theirs = _peer(flusher, "r")
        theirs.setblocking(False)
        for _ in range(20):
            woken = trio.Event()
            swept_first: list[bool] = []

            async def sender(woken: trio.Event = woken, seen: list[bool] = swept_first) -> None:
                await woken.wait()
                await trio.lowlevel.cancel_shielded_checkpoint()  # its lock
                try:  # its send: has the sweep written the frame already?
                    seen.append(bool(theirs.recv(1 << 16)))
                except BlockingIOError:
                    seen.append(False)

            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            conn.enqueue(text_frame(b"x"))  # wakes the flusher...
            woken.set()  # ...and the sender, in the same round
            await trio.testing.wait_all_tasks_blocked()
            assert swept_first == [False]
            with contextlib.suppress(BlockingIOError):
                theirs.recv(1 << 16)
        nursery.cancel_scope.cancel()

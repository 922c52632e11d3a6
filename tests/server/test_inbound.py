"""The inbound fast path (server/transport/inbound.py) against wsproto alone: for any sequence of
frames split at any recv boundaries, the server's read step sees the same messages, pongs and
close decision, and each kind of frame the fast path does not take goes to wsproto."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from wsproto import ConnectionType
from wsproto.connection import Connection

from protocol import ProtocolError, Request
from server.chat import websocket
from server.chat.connection import ChatConnection
from server.config import Config
from server.transport.inbound import InboundConnection, split_text_frames, unmask
from server.transport.outbound import OutboundBuffer

from ..rawws import client_frame
from .chat_fakes import FakeFlusher

MAX_FRAME = 300  # small, so that oversized frames and messages are cheap to generate


frame = client_frame  # one masked client frame (tests/rawws.py), masks of its own making


@dataclass
class _Recorder:
    """The session as the read step sees it: what it was handed, in order."""

    seen: list[tuple[str, Any]] = field(default_factory=list)
    protocol_errors: int = 0
    unyielded: int = 0  # the read step counts admitted requests here

    async def handle(self, request: Request) -> None:
        self.seen.append(("request", request))

    def refuse(self, exc: ProtocolError, ref: str | None = None) -> None:
        self.seen.append(("refused", exc.code))


def read(ws: Connection, chunks: list[bytes]) -> list[tuple[str, Any]]:
    """Feed `chunks` through hibiki's own `_receive`-then-`_handle_events` step (a recv each)
    until it stops reading: what the session saw, the close code, the bytes queued for the peer."""
    config = Config.from_flat(max_frame=MAX_FRAME, max_protocol_errors=1000)
    recorder = _Recorder()

    async def main() -> None:
        buf = OutboundBuffer(FakeFlusher(), 1 << 20)
        conn = ChatConnection(buf)
        session: Any = recorder
        message = websocket._Message()
        for chunk in chunks:
            ws.receive_data(chunk)
            if not await websocket._handle_events(conn, ws, session, config, message):
                recorder.seen.append(("closed", conn.close_code))
                recorder.seen.append(("by_peer", conn.closed_by_peer))
                break
        wire = b"".join(bytes(item) for item in buf.items)  # type: ignore[arg-type]
        recorder.seen.append(("wire", wire))

    trio.run(main)
    return recorder.seen


def both(chunks: list[bytes]) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    plain = read(Connection(ConnectionType.SERVER), chunks)
    fast = read(InboundConnection(MAX_FRAME), chunks)
    return plain, fast


_texts = st.text(st.characters(codec="utf-8"), max_size=60)


@st.composite
def _message(draw: st.DrawFn) -> list[bytes]:
    """One message's frames (maybe fragmented, with control frames between the fragments), or
    one control frame, or one malformed frame."""
    kind = draw(st.sampled_from(["text", "text", "text", "binary", "ping", "pong", "bad"]))
    if kind == "ping" or kind == "pong":
        return [frame(0x9 if kind == "ping" else 0xA, draw(st.binary(max_size=20)))]
    if kind == "bad":
        which = draw(st.sampled_from(["utf8", "rsv", "unmasked", "big", "opcode", "close"]))
        if which == "utf8":
            return [frame(0x1, b'"\xff\xfe"')]
        if which == "rsv":
            return [frame(0x1, b'{"type":"ping"}', rsv=draw(st.integers(1, 7)))]
        if which == "unmasked":
            return [frame(0x1, b'{"type":"ping"}', mask=False)]
        if which == "big":
            return [frame(0x1, b"x" * draw(st.integers(MAX_FRAME + 1, 2 * MAX_FRAME)))]
        if which == "opcode":
            return [frame(draw(st.sampled_from([0x3, 0x7, 0xB, 0xF])), b"")]
        code = draw(st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 3000, 4000, 4999]))
        return [frame(0x8, struct.pack("!H", code) + b"bye")]
    if kind == "binary":
        payload = draw(st.binary(max_size=40))
    else:
        request = {"type": "send", "room": "lobby", "text": draw(_texts)}
        payload = json.dumps(request, ensure_ascii=False).encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    frames = []
    for n, piece in enumerate(pieces):
        opcode = (0x1 if kind == "text" else 0x2) if n == 0 else 0x0
        frames.append(frame(opcode, piece, fin=n == len(pieces) - 1))
        if n < len(pieces) - 1 and draw(st.booleans()):
            frames.append(frame(0x9, b"between"))
    return frames


@st.composite
def _stream(draw: st.DrawFn) -> list[bytes]:
    wire = b"".join(b"".join(draw(_message())) for _ in range(draw(st.integers(0, 8))))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(wire)), max_size=8))))
    return [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True) if b > a]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_stream())
def test_fast_path_and_wsproto_alone_see_the_same_messages_and_close(chunks: list[bytes]) -> None:
    plain, fast = both(chunks)
    assert fast == plain


def test_a_flood_of_whole_text_frames_never_reaches_wsproto() -> None:
    payloads = [json.dumps({"type": "send", "room": "lobby", "text": f"日本{k}"}) for k in range(5)]
    ws = InboundConnection(MAX_FRAME)
    ws.receive_data(b"".join(frame(0x1, p.encode()) for p in payloads))
    assert ws.texts == payloads
    assert not ws.fed


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("binary", frame(0x2, b"{}")),
        ("fragment", frame(0x1, b"{", fin=False) + frame(0x0, b"}")),
        ("ping", frame(0x9, b"p")),
        ("close", frame(0x8, struct.pack("!H", 1000))),
        ("unmasked", frame(0x1, b"{}", mask=False)),
        ("rsv", frame(0x1, b"{}", rsv=4)),
        ("oversized", frame(0x1, b"x" * (MAX_FRAME + 1))),
        ("invalid utf-8", frame(0x1, b"\xc3\x28")),
        # Partial even with the frame behind it: its header asks for more than follows (a
        # shorter cut would be completed by the next frame's bytes, a random-masked payload).
        ("partial", frame(0x1, b"x" * 200)[:50]),
        ("2-byte length for 5 bytes", b"\x81\xfe\x00\x05" + b"\0" * 4 + b"12345"),
    ],
    # Named by the case alone: the frames' masks are random, and every xdist worker must
    # collect the same test ids.
    ids=lambda value: value if isinstance(value, str) else "frame",
)
def test_each_frame_the_fast_path_does_not_take_goes_to_wsproto_with_what_follows(
    name: str, wire: bytes
) -> None:
    after = frame(0x1, b'{"type":"ping"}')
    first = frame(0x1, b'{"type":"ping"}')
    texts, used = split_text_frames(first + wire + after, MAX_FRAME)
    assert (texts, used) == (['{"type":"ping"}'], len(first)), name
    ws = InboundConnection(MAX_FRAME)
    ws.receive_data(first + wire + after)
    assert ws.texts == ['{"type":"ping"}'] and ws.fed


def test_the_fast_path_resumes_only_once_wsproto_holds_nothing() -> None:
    whole = frame(0x1, b'{"type":"ping"}')
    ws = InboundConnection(MAX_FRAME)
    ws.receive_data(frame(0x1, b"{", fin=False))  # a message in progress
    ws.receive_data(whole)  # a text frame in the middle of a fragmented message: wsproto's
    assert ws.texts is None
    ws.fed = False
    list(ws.events())
    ws.receive_data(whole[:5])  # half a frame: buffered in wsproto
    ws.receive_data(whole[5:] + whole)
    assert ws.texts is None and ws.fed


def test_a_text_frame_split_mid_character_is_reassembled_by_wsproto() -> None:
    payload = json.dumps({"type": "send", "room": "lobby", "text": "日本語"}, ensure_ascii=False)
    wire = frame(0x1, payload.encode())
    plain, fast = both([wire[:20], wire[20:]])
    assert fast == plain
    assert sum(1 for kind, _ in fast if kind == "request") == 1


def test_invalid_utf8_in_a_whole_frame_closes_with_1007_as_wsproto_does() -> None:
    plain, fast = both([frame(0x1, b'{"type":"ping"}') + frame(0x1, b'"\xed\xa0\x80"')])
    assert fast == plain
    assert ("closed", 1007) in fast


def test_unmask_is_the_xor_with_the_repeated_key_at_every_size() -> None:
    key = b"\x01\x80\xff\x3c"
    for n in (0, 1, 3, 4, 5, 511, 2048, 5000):
        payload = os.urandom(n)
        expected = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        assert unmask(payload, key) == expected


def test_trailing_handshake_bytes_take_the_fast_path() -> None:
    ws = InboundConnection(MAX_FRAME, trailing_data=frame(0x1, b'{"type":"ping"}'))
    assert ws.texts == ['{"type":"ping"}'] and not ws.fed


def test_a_bad_frame_after_fast_frames_is_still_judged_by_wsproto() -> None:
    chunks = [frame(0x1, b'{"type":"ping"}') * 3 + frame(0x1, b"{}", rsv=1)]
    plain, fast = both(chunks)
    assert fast == plain
    assert ("closed", 1002) in fast


def test_read_reports_the_close_decision() -> None:
    seen = read(Connection(ConnectionType.SERVER), [frame(0x1, b"x" * (MAX_FRAME + 1))])
    assert ("closed", 1009) in seen

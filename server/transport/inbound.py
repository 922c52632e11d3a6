"""Inbound fast path: complete, final, masked text frames parsed without wsproto (issue #14).

A client's frames are nearly all one kind: a whole JSON text message in one masked frame, often
many of them in one `recv`. wsproto parses each through a buffer, a header tuple, a masker, a
message decoder and an event object (95-106k instructions per message, callgrind); parsing it
here takes a fraction of that. Every other frame, and everything after it in the same `recv`,
goes to wsproto, which keeps the final word on what is valid.

Why bypassing wsproto is sound (read in wsproto 1.2-1.3's `connection.py` and
`frame_protocol.py`): between frames its `Connection` keeps `_events` (filled only by
`receive_data(None)`), `_state`, and in `FrameProtocol` a `FrameDecoder` (a byte `buffer`,
the `header` of a frame in progress) and a `MessageDecoder` (the `opcode` of a fragmented
message in progress); no counter or checksum spans frames. So while the connection is OPEN, no
event is queued, the buffer is empty, no frame header is pending and no message is in progress,
a complete frame that wsproto would turn into one finished `TextMessage` can be consumed here
instead, and wsproto, seeing the next bytes at a frame boundary, is in the state it would have
been in after parsing that frame itself. pyproject pins wsproto below 1.4 for these internals.
"""

from __future__ import annotations

from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState

_TEXT_FINAL = 0x81  # FIN=1, RSV1-3=0, opcode text
_MASKED = 0x80
# From this size the strided translate costs fewer instructions than one big-int XOR (callgrind:
# 6.7k vs 15.0k at 100 bytes, 47.7k vs 33.2k at 1,000; the lines cross near 420 bytes).
_TRANSLATE_FROM = 512
_XOR_TABLES = [bytes(a ^ b for a in range(256)) for b in range(256)]


def unmask(payload: bytes, mask: bytes) -> bytes:
    """`payload` XOR the repeated 4-byte `mask` (RFC 6455 §5.3)."""
    n = len(payload)
    if n < _TRANSLATE_FROM:
        key = (mask * (n // 4 + 1))[:n]
        return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little"
        )
    data = bytearray(payload)
    for k in range(4):
        data[k::4] = data[k::4].translate(_XOR_TABLES[mask[k]])
    return bytes(data)


def split_text_frames(data: bytes, limit: int) -> tuple[list[str], int]:
    """The texts of the complete, final, masked, RSV-free text frames at the start of `data`
    whose payload is at most `limit` bytes of valid UTF-8, and the offset of the first byte not
    consumed: the first frame of any other kind (or cut short, or with a length not minimally
    encoded, or invalid UTF-8) and all after it are left for wsproto to parse and judge."""
    texts: list[str] = []
    pos = 0
    end = len(data)
    while end - pos >= 6:
        if data[pos] != _TEXT_FINAL:
            break
        n = data[pos + 1]
        if n < _MASKED:
            break
        n &= 0x7F
        head = pos + 2
        if n == 126:
            n = int.from_bytes(data[head : head + 2], "big")
            if n < 126:
                break
            head += 2
        elif n == 127:
            n = int.from_bytes(data[head : head + 8], "big")
            if n < 65536 or n >> 63:
                break
            head += 8
        start = head + 4
        stop = start + n
        if n > limit or stop > end:
            break
        try:
            texts.append(unmask(data[start:stop], data[head:start]).decode("utf-8"))
        except UnicodeDecodeError:
            break  # wsproto closes with 1007, exactly as without the fast path
        pos = stop
    return texts, pos


class InboundConnection(Connection):
    """A server-side wsproto `Connection` whose `receive_data` takes the fast path while wsproto
    holds nothing: the consumed frames' texts wait in `texts` (in order, before any event
    wsproto has), and `fed` says wsproto was given bytes and may have events. The reader takes
    `texts`, then, only if `fed`, iterates `events()`."""

    def __init__(self, max_frame: int, trailing_data: bytes = b"") -> None:
        self.texts: list[str] | None = None
        self.fed = False
        self._max_frame = max_frame
        super().__init__(ConnectionType.SERVER)
        self.receive_data(trailing_data)

    def receive_data(self, data: bytes | None) -> None:
        if data and self._wsproto_idle():
            texts, used = split_text_frames(data, self._max_frame)
            if texts:
                if self.texts is None:
                    self.texts = texts
                else:
                    self.texts += texts
            if used == len(data):
                return
            data = data[used:]
        elif not data and data is not None:
            return
        self.fed = True
        super().receive_data(data)

    def _wsproto_idle(self) -> bool:
        """wsproto is between frames with nothing buffered, queued or in progress."""
        proto = self._proto
        frames = proto._frame_decoder
        return (
            self._state is ConnectionState.OPEN
            and not self._events
            and frames.header is None
            and not frames.buffer.buffer
            and proto._message_decoder.opcode is None
        )

"""Server-to-client WebSocket framing (RFC 6455 §5.2): unmasked, so one frame serves every peer."""

from __future__ import annotations

import struct

_OP_TEXT = 0x1
_OP_CLOSE = 0x8
_OP_PING = 0x9
_OP_PONG = 0xA


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def text_frame(payload: bytes) -> bytes:
    """A final text frame carrying `payload` (already UTF-8 JSON)."""
    return _frame(_OP_TEXT, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    # Control frame payloads are at most 125 bytes: 2 for the code, the rest for the reason.
    return _frame(_OP_CLOSE, struct.pack("!H", code) + reason.encode()[:123])


def ping_frame(payload: bytes = b"") -> bytes:
    return _frame(_OP_PING, payload[:125])


def pong_frame(payload: bytes = b"") -> bytes:
    return _frame(_OP_PONG, payload[:125])


def frame_bounds(data: bytes, offset: int) -> tuple[int, int]:
    """Start and end of the frame holding byte `offset` of `data`, which must be whole frames
    from its first byte (a room segment's bytes, never a backlog that starts inside a frame)."""
    position = 0
    while True:
        n = data[position + 1] & 0x7F
        if n == 126:
            end = position + 4 + int(struct.unpack_from("!H", data, position + 2)[0])
        elif n == 127:
            end = position + 10 + int(struct.unpack_from("!Q", data, position + 2)[0])
        else:
            end = position + 2 + n
        if end > offset:
            return position, end
        position = end

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

"""A deliberately minimal WebSocket client on a raw trio socket, for misbehaving-peer tests
(never reading, never answering pings, oversize frames) that a real library will not do."""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class RawWs:
    """Use `async with RawWs.open(port) as raw:`, so that a failing test cannot leak the socket
    (and fail a later test with a ResourceWarning); `connect` leaves closing to the caller."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    @classmethod
    @asynccontextmanager
    async def open(
        cls, port: int, *, origin: str | None = None, rcvbuf: int | None = None
    ) -> AsyncIterator[RawWs]:
        raw = await cls.connect(port, origin=origin, rcvbuf=rcvbuf)
        try:
            yield raw
        finally:
            await raw.aclose()

    @classmethod
    async def connect(
        cls, port: int, *, origin: str | None = None, rcvbuf: int | None = None
    ) -> RawWs:
        sock = trio.socket.socket()
        try:
            if rcvbuf is not None:
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, rcvbuf)
            await sock.connect(("127.0.0.1", port))
            self = cls(trio.SocketStream(sock))
            key = base64.b64encode(os.urandom(16)).decode()
            extra = f"Origin: {origin}\r\n" if origin else ""
            await self.stream.send_all(
                (
                    f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
                ).encode()
            )
        except BaseException:
            sock.close()
            raise
        return self

    async def read_response_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            data = await self.stream.receive_some(65536)
            if not data:
                break
            self.buf += data
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head

    async def send_frame(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await self.stream.send_all(header + mask + masked)

    async def _need(self, n: int) -> bool:
        while len(self.buf) < n:
            data = await self.stream.receive_some(65536)
            if not data:
                return False
            self.buf += data
        return True

    async def read_frame(self) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next server frame, or None at EOF."""
        if not await self._need(2):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n, offset = b1 & 0x7F, 2
        if n == 126:
            if not await self._need(4):
                return None
            n, offset = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            if not await self._need(10):
                return None
            n, offset = struct.unpack("!Q", self.buf[2:10])[0], 10
        if not await self._need(offset + n):
            return None
        payload = self.buf[offset : offset + n]
        self.buf = self.buf[offset + n :]
        return b0 & 0x0F, payload

    async def read_until_close(self) -> int | None:
        """Read (and drop) frames until the server's close frame; its code, or None at EOF."""
        while True:
            frame = await self.read_frame()
            if frame is None:
                return None
            opcode, payload = frame
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005

    async def aclose(self) -> None:
        await self.stream.aclose()


def parse_frames(wire: bytes) -> list[tuple[int, bytes]]:
    """Unmasked final frames with minimal length encoding; fails on anything else or a cut."""
    frames, i = [], 0
    while i < len(wire):
        assert len(wire) - i >= 2, f"a frame header was cut at {i}"
        b0, b1 = wire[i], wire[i + 1]
        assert b0 & 0xF0 == 0x80 and b1 & 0x80 == 0, f"not a final unmasked frame at {i}"
        opcode, n, i = b0 & 0x0F, b1 & 0x7F, i + 2
        assert opcode in (0x1, 0x8, 0x9, 0xA), f"unexpected opcode {opcode} at {i - 2}"
        if n == 126:
            assert len(wire) - i >= 2, "a frame header was cut"
            n, i = struct.unpack_from("!H", wire, i)[0], i + 2
            assert n >= 126, "length not minimally encoded"
        elif n == 127:
            assert len(wire) - i >= 8, "a frame header was cut"
            n, i = struct.unpack_from("!Q", wire, i)[0], i + 8
            assert n >= 65536, "length not minimally encoded"
        assert len(wire) - i >= n, f"a frame was cut: {n} bytes announced, {len(wire) - i} sent"
        frames.append((opcode, bytes(wire[i : i + n])))
        i += n
    return frames


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One client frame's bytes, masked unless told otherwise, for frames `send_frame` cannot
    make (fragments, reserved bits, unmasked)."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    bit = 0x80 if mask else 0
    if n < 126:
        header = bytes((first, bit | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, bit | 127, n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

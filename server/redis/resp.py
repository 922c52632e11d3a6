"""The few RESP2 pieces the bus's own two Redis connections need: commands out, replies in.

The bus talks to Redis over two plain sockets of its own (one publishes, one subscribes) rather
than through coredis: it must know the moment a connection breaks (every subscription is gone
then, and live rooms must catch up from the store), and coredis's pub/sub on a non-cluster client
offers only `SUBSCRIBE`, not sharded `SSUBSCRIBE`, and reconnects behind the caller's back.
"""

from __future__ import annotations

from typing import TypeAlias, Union

import trio


class RedisReplyError(Exception):
    """Redis answered a command with an error (`-ERR ...`)."""


Reply: TypeAlias = Union[bytes, int, list["Reply"], RedisReplyError, None]  # noqa: UP007


def command(*parts: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class ReplyReader:
    """Parses replies off a stream; `EOFError` when the peer closes."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def _fill(self) -> None:
        chunk = await self._stream.receive_some(65536)
        if not chunk:
            raise EOFError("redis closed the connection")
        self._buffer += chunk

    async def _line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size + 2:
            await self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[: size + 2]
        return data

    async def read(self) -> Reply:
        line = await self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+",):
            return rest
        if kind == b"-":
            return RedisReplyError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else await self._exactly(size)
        if kind in (b"*", b">"):
            count = int(rest)
            return None if count < 0 else [await self.read() for _ in range(count)]
        raise EOFError(f"unexpected reply from redis: {line[:40]!r}")

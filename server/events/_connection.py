"""The appender's own connection to Redis: a round of XADDs as one write and its replies read
back, in RESP (server.redis.resp), without a client library's cost per command (coredis spends
~80 us of Python on each; a round of 1000 XADDs here is a few ms). Any failure closes the socket,
and the next round connects again; whether a failed round's XADDs landed is not known (the
appender re-appends them: consumers dedupe)."""

from __future__ import annotations

import urllib.parse

import trio

from server.redis.resp import RedisReplyError, ReplyReader, command


class StreamConnection:
    """One connection to the Redis at `url` (`redis://[user:password@]host:port/db`)."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._tls = parts.scheme == "rediss"
        self._username = urllib.parse.unquote(parts.username) if parts.username else None
        self._password = urllib.parse.unquote(parts.password) if parts.password else None
        self._db = int(parts.path.strip("/") or 0)
        self._stream: trio.abc.Stream | None = None
        self._replies: ReplyReader | None = None

    async def run_all(self, commands: list[bytes]) -> None:
        """Send `commands` in one write, then read a reply for each; raise if any failed (the
        connection is closed then: the next call opens a new one)."""
        try:
            stream, replies = await self._connected()
            await stream.send_all(b"".join(commands))
            failed: RedisReplyError | None = None
            for _ in commands:
                reply = await replies.read()
                if isinstance(reply, RedisReplyError):
                    failed = reply
            if failed is not None:
                raise failed
        except BaseException:
            await self.aclose()
            raise

    async def _connected(self) -> tuple[trio.abc.Stream, ReplyReader]:
        if self._stream is None or self._replies is None:
            if self._tls:
                stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                    self._host, self._port
                )
            else:
                stream = await trio.open_tcp_stream(self._host, self._port)
            self._stream, self._replies = stream, ReplyReader(stream)
            first: list[bytes] = []
            if self._password is not None:
                auth = [self._username, self._password] if self._username else [self._password]
                first.append(command(b"AUTH", *auth))
            if self._db:
                first.append(command(b"SELECT", self._db))
            if first:
                await stream.send_all(b"".join(first))
                for _ in first:
                    if isinstance(reply := await self._replies.read(), RedisReplyError):
                        raise reply
        return self._stream, self._replies

    async def aclose(self) -> None:
        stream, self._stream, self._replies = self._stream, None, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

"""One process's link to Redis: a coredis client for commands, and the bus's pub/sub connections.

    link = RedisLink("redis://127.0.0.1:6379/0", namespace="chat1")
    await nursery.start(link.run)     # owns the client and the reconnect loop until cancelled
    await link.client.set(link.key("presence", room), b"...")   # any coredis command
    link.healthy                      # both pub/sub connections are up right now
    link.on_reconnect(flush_l1)       # called (synchronously) after every reconnect, not the first

`client` is a `coredis.Redis[bytes]` (replies as bytes); it reconnects by itself and raises
`coredis.exceptions.ConnectionError` while Redis is away (`TimeoutError` when it does not answer
within `ping_timeout`), so a caller that must not fail treats both as "Redis unavailable".
`healthy` follows the link's own connections: what /healthz reports as `redis: ok` / `redis:
degraded`. A closed connection is noticed at once; a Redis that stops answering but keeps TCP
open (stopped, hung, a dead host behind a live route) by the keepalive: a PING on each connection
every `ping_interval`, and no answer within `ping_timeout` ends the session like a loss. Redis
unreachable at start is not fatal: the process serves its own clients and keeps trying
(docs/operations.md).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable

import coredis
import trio

from server.redis.resp import RedisReplyError, ReplyReader, command

_log = logging.getLogger(__name__)

RETRY_FIRST = 0.05  # seconds before the first reconnect attempt; doubled up to RETRY_MAX
RETRY_MAX = 1.0
PING_INTERVAL = 1.0  # seconds between keepalive PINGs on each of the link's connections
PING_TIMEOUT = 2.0  # seconds a PING (and any coredis command) may wait for its answer
_PING = command(b"PING")


def namespaced_key(namespace: str, *parts: str | int, tag: str | None = None) -> str:
    """`ns:part:part`; with `tag`, `ns:{tag}:part...`, so a cluster keeps keys that share a tag
    (and a multi-key command over them) in one slot. One form for both links: the same state
    has the same keys on one Redis and on a cluster."""
    head = [namespace] + ([f"{{{tag}}}"] if tag is not None else [])
    return ":".join([*head, *map(str, parts)])


MessageHandler = Callable[[bytes, bytes], None]  # (channel, payload)
SubscribedHandler = Callable[[bytes], None]  # (channel): the subscription is in force


class RedisUnavailable(Exception):
    """The link has no connection to Redis right now."""


_LINK_ERRORS = (OSError, EOFError, trio.BrokenResourceError, trio.TooSlowError, RedisReplyError)


class _Connection:
    """One socket to Redis, authenticated."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.replies = ReplyReader(stream)


class RedisLink:
    """Owns the coredis client and two connections of its own: one publishes, one subscribes.

    Subscriptions are sharded (`SSUBSCRIBE`, Redis >= 7.0: on a single node as on a cluster,
    where a channel's hash tag picks its slot) and remembered: after a reconnect every wanted
    channel is subscribed again, and `on_subscribed` says when each is in force.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        connect_timeout: float = 2.0,
        ping_interval: float = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
    ) -> None:
        self.namespace = namespace
        self.client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            decode_responses=False,
            connect_timeout=connect_timeout,
            stream_timeout=ping_timeout,
        )
        parts = urllib.parse.urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._tls = parts.scheme == "rediss"
        self._username = urllib.parse.unquote(parts.username) if parts.username else None
        self._password = urllib.parse.unquote(parts.password) if parts.password else None
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self.healthy = False
        self.reconnects = 0  # connections re-established after a loss
        self.timeouts = 0  # sessions ended because a PING went unanswered
        self._pong = trio.Event()  # the subscriber connection answered the last PING
        self._loss_logged = False  # this outage has had its one log line
        self._connected_once = False
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._on_message: MessageHandler = lambda channel, payload: None
        self._on_subscribed: SubscribedHandler = lambda channel: None
        self._wanted: set[bytes] = set()
        self._outgoing: list[bytes] = []  # subscribe commands for the subscriber connection
        self._wake = trio.Event()
        self._pub: _Connection | None = None
        self._pub_lock = trio.Lock()
        self._session: trio.CancelScope | None = None

    def key(self, *parts: str | int, tag: str | None = None) -> str:
        return namespaced_key(self.namespace, *parts, tag=tag)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after every reconnect (Redis was lost: what it said may be stale)."""
        self._reconnect_callbacks.append(callback)

    def on_message(self, handler: MessageHandler, subscribed: SubscribedHandler) -> None:
        """The bus's receiver: messages of subscribed channels, and each subscription's start."""
        self._on_message, self._on_subscribed = handler, subscribed

    def subscribe(self, channel: bytes) -> None:
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._send(command(b"SSUBSCRIBE", channel))

    def unsubscribe(self, channel: bytes) -> None:
        if channel in self._wanted:
            self._wanted.discard(channel)
            self._send(command(b"SUNSUBSCRIBE", channel))

    def _send(self, data: bytes) -> None:
        if self.healthy:
            self._outgoing.append(data)
            self._wake.set()

    async def publish(self, messages: list[tuple[bytes, bytes]]) -> None:
        """`SPUBLISH` each (channel, payload) in one round trip; `RedisUnavailable` if down."""
        async with self._pub_lock:
            pub = self._pub
            if pub is None:
                raise RedisUnavailable("no connection to redis")
            try:
                await pub.stream.send_all(
                    b"".join(command(b"SPUBLISH", ch, data) for ch, data in messages)
                )
                for _ in messages:
                    if isinstance(reply := await pub.replies.read(), RedisReplyError):
                        raise reply
            except (*_LINK_ERRORS, trio.ClosedResourceError) as exc:
                # ClosedResourceError: the session ended (its subscriber saw Redis go) and closed
                # this connection under our feet; that is Redis unavailable, not a crash.
                if self._pub is pub:
                    self._lost(exc)  # never a later session's: it has connections of its own
                raise RedisUnavailable(str(exc)) from exc

    def _lost(self, exc: BaseException) -> None:
        if self._session is not None:
            _log.warning("redis connection lost", extra={"error": str(exc)})
            self._loss_logged = True
            self._session.cancel()
            self._session = None  # one line per loss, whichever connection noticed it first

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the connections up until cancelled: on a loss, retry with a growing pause."""
        async with self.client:
            task_status.started()
            pause = RETRY_FIRST
            while True:
                try:
                    await self._serve()
                    pause = RETRY_FIRST  # it was up: the loss is news, retry soon
                except _LINK_ERRORS as exc:
                    if self._connected_once and not self._loss_logged:
                        _log.warning("redis unreachable", extra={"error": str(exc)})
                        self._loss_logged = True
                finally:
                    self._down()
                await trio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX)

    def _down(self) -> None:
        self.healthy = False
        self._pub = None
        self._session = None
        self._outgoing.clear()

    async def _serve(self) -> None:
        """One life of the two connections: until one of them fails."""
        pub = await self._connect()
        sub = await self._connect()
        try:
            with trio.CancelScope() as session:
                self._session = session
                self._pub = pub
                self.healthy = True
                self._outgoing = [command(b"SSUBSCRIBE", ch) for ch in sorted(self._wanted)]
                self._wake.set()
                if self._connected_once:
                    self.reconnects += 1
                    _log.info("redis reconnected", extra={"reconnects": self.reconnects})
                    for callback in self._reconnect_callbacks:
                        callback()
                self._connected_once = True
                self._loss_logged = False
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._until_lost, self._write_subscriptions, sub)
                    nursery.start_soon(self._until_lost, self._keepalive, pub)
                    await self._until_lost(self._read_pushes, sub)
        finally:
            with trio.CancelScope(shield=True):
                await pub.stream.aclose()
                await sub.stream.aclose()

    async def _connect(self) -> _Connection:
        """A connection Redis has answered on (a stopped Redis still accepts TCP connections)."""
        with trio.fail_after(self._connect_timeout):
            if self._tls:
                stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                    self._host, self._port
                )
            else:
                stream = await trio.open_tcp_stream(self._host, self._port)
            conn = _Connection(stream)
            hello = []
            if self._password is not None:
                auth = [self._username, self._password] if self._username else [self._password]
                hello.append(command(b"AUTH", *auth))
            hello.append(_PING)
            try:
                await stream.send_all(b"".join(hello))
                for _ in hello:
                    if isinstance(reply := await conn.replies.read(), RedisReplyError):
                        raise reply
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return conn

    async def _until_lost(
        self, part: Callable[[_Connection], Awaitable[None]], conn: _Connection
    ) -> None:
        """Run one side of the session; a broken connection ends the whole session (not a crash:
        the nursery never sees it, `run` reconnects)."""
        try:
            await part(conn)
        except _LINK_ERRORS as exc:
            self._lost(exc)

    async def _keepalive(self, pub: _Connection) -> None:
        """PING both connections every interval; either one silent past the timeout ends the
        session (counted in `timeouts`; `run` reconnects)."""
        while True:
            await trio.sleep(self._ping_interval)
            self._pong = pong = trio.Event()
            self._outgoing.append(_PING)  # subscribed mode allows PING; its answer: pong
            self._wake.set()
            with trio.move_on_after(self._ping_timeout):
                async with self._pub_lock:  # behind a publish stuck on its reply: that counts
                    await pub.stream.send_all(_PING)
                    if isinstance(reply := await pub.replies.read(), RedisReplyError):
                        raise reply
                await pong.wait()
                continue
            self.timeouts += 1
            self._lost(TimeoutError(f"redis did not answer PING within {self._ping_timeout} s"))
            return

    async def _write_subscriptions(self, sub: _Connection) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            data, self._outgoing = b"".join(self._outgoing), []
            if data:
                await sub.stream.send_all(data)

    async def _read_pushes(self, sub: _Connection) -> None:
        """Raises EOFError when Redis goes away (ending the session)."""
        while True:
            reply = await sub.replies.read()
            if isinstance(reply, RedisReplyError):
                raise reply
            if reply == b"PONG" or (isinstance(reply, list) and reply[:1] == [b"pong"]):
                self._pong.set()  # (`+PONG` while nothing is subscribed)
                continue
            if not isinstance(reply, list) or len(reply) < 3:
                continue
            kind, channel, body = reply[0], reply[1], reply[2]
            if not isinstance(channel, bytes):
                continue
            if kind == b"smessage" and isinstance(body, bytes):
                self._on_message(channel, body)
            elif kind == b"ssubscribe" and channel in self._wanted:
                self._on_subscribed(channel)

"""Fakes of what the chat rules depend on (store, writer, flusher), for tests with no socket.

The chat state under test is the real `ChatConnection` over a real `OutboundBuffer`; only the
flusher is a fake, which keeps what is queued so a test reads it as the client would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import trio

from protocol import Message, encode
from server.chat.connection import ChatConnection
from server.chat.membership import MembershipSync
from server.chat.membership_invalidation import LocalMembershipInvalidation
from server.chat.ratelimit import UserRateLimiter
from server.chat.session import ChatServices, ChatSession
from server.chat.token_index import TokenIndex
from server.chat.user_connections import LocalUserConnections
from server.fanout.bus import LocalBus
from server.fanout.hub import RoomHub
from server.fanout.presence import LocalOnlineUsers
from server.ops.metrics import Metrics
from server.persist.writer import MessageWriter, PendingSend
from server.transport.outbound import OutboundBuffer
from storage import NotFound, Store, TokenGrant, User
from storage.cache import MembershipCache

from ..conftest import make_config
from ..rawws import parse_frames


class FakeFlusher:
    """A `FlushQueue` that writes nothing: the backlog stays in the buffer for the test."""

    def __init__(self) -> None:
        self.dirty: list[OutboundBuffer] = []

    def mark_dirty(self, buf: OutboundBuffer) -> None:
        self.dirty.append(buf)

    def wake(self) -> None:
        pass

    def flush_now(self, buf: OutboundBuffer) -> None:
        pass


class FakeStore:
    """The parts of `Store` the session, membership and sequencer read, in memory."""

    def __init__(self) -> None:
        self.tokens: dict[str, User] = {}
        self.members: dict[str, set[int]] = {}
        self.messages: dict[str, list[Message]] = {}
        self.on_messages_after: Callable[[], None] | None = None  # runs inside that read

    def add_message(self, room: str, seq: int) -> Message:
        message = Message(room, seq, seq, "bob", f"m{seq}", 0)
        self.messages.setdefault(room, []).append(message)
        return message

    async def grant_for_token(self, token: str) -> TokenGrant | None:
        await trio.lowlevel.checkpoint()
        user = self.tokens.get(token)
        expires_ms = int((time.time() + 3600) * 1000)
        return None if user is None else TokenGrant(user, expires_ms)

    async def rooms_of(self, user_id: int) -> list[str]:
        await trio.lowlevel.checkpoint()
        return sorted(room for room, users in self.members.items() if user_id in users)

    async def is_member(self, room: str, user_id: int) -> bool:
        await trio.lowlevel.checkpoint()
        return user_id in self.members.get(room, set())

    async def join_room(self, room: str, user_id: int) -> bool:
        await trio.lowlevel.checkpoint()
        if room not in self.members:
            raise NotFound(room)
        self.members[room].add(user_id)
        return True

    async def leave_room(self, room: str, user_id: int) -> bool:
        await trio.lowlevel.checkpoint()
        self.members.get(room, set()).discard(user_id)
        return True

    async def last_seq(self, room: str) -> int:
        await trio.lowlevel.checkpoint()
        return max((m.seq for m in self.messages.get(room, [])), default=0)

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[Message]:
        await trio.lowlevel.checkpoint()
        if self.on_messages_after is not None:
            hook, self.on_messages_after = self.on_messages_after, None
            hook()
        return [m for m in self.messages.get(room, []) if m.seq > after_seq][:limit]


class FakeWriter:
    """Takes what a session submits; nothing is stored."""

    def __init__(self) -> None:
        self.submitted: list[PendingSend] = []
        self.lasts: list[bool] = []  # each submit's `last`

    async def submit(self, item: PendingSend, *, last: bool = False) -> None:
        await trio.lowlevel.checkpoint()
        self.submitted.append(item)
        self.lasts.append(last)


class Chat:
    """One process's chat services over the fakes, and a way to open connections to them."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.store = FakeStore()
        self.writer = FakeWriter()
        self.flusher = FakeFlusher()
        self.stopped: list[ChatConnection] = []  # connections whose reader was stopped
        self.config = make_config(tmp_path, **config)
        self.bus = LocalBus()
        presence = LocalOnlineUsers(self.bus)
        self.hub = RoomHub(self.flusher, bus=self.bus, presence=presence, backfill=self.store)
        self.bus.attach_hub(self.hub)
        store = cast(Store, self.store)
        membership = MembershipCache(store, 100, 60.0)
        self.memberships = MembershipSync(
            store,
            self.hub,
            self.bus,
            invalidation=LocalMembershipInvalidation(membership),
            connections=LocalUserConnections(),
            presence=presence,
        )
        self.bus.attach_memberships(self.memberships)
        self.services = ChatServices(
            config=self.config,
            store=store,
            hub=self.hub,
            bus=self.bus,
            writer=cast(MessageWriter, self.writer),
            membership=membership,
            memberships=self.memberships,
            tokens=TokenIndex(),
            limiter=UserRateLimiter(
                self.config.limits.rate_per_second, self.config.limits.rate_burst
            ),
            metrics=Metrics(),
        )

    def connect(self) -> tuple[ChatConnection, ChatSession]:
        """A connection in HELLO whose reader, when stopped, is recorded in `stopped`."""
        buf = OutboundBuffer(self.flusher, self.config.limits.outbound_limit)
        conn = ChatConnection(buf, stop_reading=lambda: self.stopped.append(conn))
        return conn, ChatSession(conn, self.services)


def received(conn: ChatConnection) -> list[dict[str, Any]]:
    """Take what is queued for `conn` as the client would read it: text frames as JSON, a
    close frame as {"close": code}."""
    wire = b"".join(i if isinstance(i, bytes) else i.seal() for i in conn.out.items)
    conn.out.items.clear()
    out: list[dict[str, Any]] = []
    for opcode, payload in parse_frames(wire):
        if opcode == 0x8:
            out.append({"close": int.from_bytes(payload[:2], "big")})
        elif opcode == 0x9:
            out.append({"ping": payload.decode()})
        elif opcode == 0x1:
            out.append(json.loads(payload))
    return out


def message_payload(store: FakeStore, room: str, seq: int) -> bytes:
    """Commit message `seq` to the fake store and return its encoded event (what the writer
    publishes)."""
    return encode(store.add_message(room, seq))

"""What a connected user may do: the chat rules applied to each decoded request."""

from __future__ import annotations

import time
from dataclasses import dataclass

import trio

from protocol import (
    PROTOCOL_VERSION,
    Ban,
    CloseCode,
    Delete,
    Edit,
    Error,
    ErrorCode,
    Hello,
    HistoryPage,
    HistoryRequest,
    Invite,
    Join,
    Kick,
    Leave,
    Left,
    Ping,
    Pong,
    ProtocolError,
    ReadRequest,
    Request,
    Resync,
    RoomUpdate,
    SearchRequest,
    Send,
    SetRole,
    Transfer,
    Typing,
    TypingRequest,
    Unban,
    Unread,
    Welcome,
    encode,
)
from server.chat.change_rules import check_change
from server.chat.connection import ChatConnection, ConnState
from server.chat.membership import MembershipSync
from server.chat.ratelimit import RateLimiter
from server.chat.read_state import ReadState
from server.chat.room_control import RoomControl
from server.chat.room_requests import RoomRequest, actor_of, answer_room_request
from server.chat.room_rules import STAFF, RoomRules, SlowModeGate, check_slow_mode
from server.chat.search import search
from server.chat.token_index import TokenIndex
from server.config import Config
from server.fanout.bus import RoomBus
from server.fanout.hub import RoomHub
from server.ops.metrics import Metrics
from server.persist.writer import MessageWriter, PendingSend
from server.transport.frames import text_frame
from storage import KIND_DELETE, KIND_EDIT, Banned, NewMessage, NotFound, Store
from storage.cache import MembershipCache
from storage.passwords import token_hash


@dataclass(frozen=True, slots=True)
class ChatServices:
    """Everything a session needs, built once by the app and shared by all sessions."""

    config: Config
    store: Store
    hub: RoomHub
    bus: RoomBus
    writer: MessageWriter
    membership: MembershipCache
    memberships: MembershipSync
    tokens: TokenIndex
    limiter: RateLimiter
    metrics: Metrics
    reads: ReadState | None = None  # read state (issue #15); None only in unit tests' fakes
    # Rooms with roles and settings (issue #15); None only in unit tests' fakes.
    rooms: RoomControl | None = None
    rules: RoomRules | None = None
    slow_gate: SlowModeGate | None = None


# The refusals that mean the client sent a bad frame (docs/protocol.md, error codes: "the first
# ten"); they count towards `max_protocol_errors`. Refusals of well-formed requests (not a
# member, rate limited, ...) do not: a correct client meets those too.
_COUNTED = frozenset(
    {
        ErrorCode.BAD_ENCODING,
        ErrorCode.BAD_JSON,
        ErrorCode.NOT_AN_OBJECT,
        ErrorCode.UNKNOWN_TYPE,
        ErrorCode.MISSING_FIELD,
        ErrorCode.UNKNOWN_FIELD,
        ErrorCode.BAD_FIELD,
        ErrorCode.TEXT_EMPTY,
        ErrorCode.TEXT_TOO_LONG,
        ErrorCode.NOT_AUTHENTICATED,
    }
)


class ChatSession:
    def __init__(self, conn: ChatConnection, services: ChatServices) -> None:
        self.conn = conn
        self.s = services
        self.protocol_errors = 0  # bad frames so far: the reader closes at the limit
        # Requests handled since the reader last yielded; it yields at `admit_per_turn`.
        self.unyielded = 0
        # The request being handled is the last the reader holds (nothing more was read):
        # a send then may be committed at once (`MessageWriter.submit`'s `last`).
        self.last_read = False

    async def handle(self, request: Request) -> None:
        """Apply one request; expected refusals become `error` frames, never exceptions."""
        try:
            await self._dispatch(request)
        except ProtocolError as exc:
            self.refuse(exc, getattr(request, "ref", None))

    def refuse(self, exc: ProtocolError, ref: str | None = None) -> None:
        """Answer a refused frame with an `error`, counting it if it was a bad frame."""
        if exc.code in _COUNTED:
            self.protocol_errors += 1
        if exc.retry_after is not None:
            error = Error(exc.code, exc.message, exc.ref or ref, retry_after=exc.retry_after)
            self.conn.send_event(error)
            return
        self.error(exc.code, exc.message, exc.ref or ref)

    def error(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        self.conn.send_event(Error(code=code, message=message, ref=ref))

    async def _dispatch(self, request: Request) -> None:
        conn = self.conn
        if type(request) is Ping:
            conn.send_event(Pong(ref=request.ref))
            return
        if conn.state is ConnState.HELLO:
            if type(request) is Hello:
                await self._hello(request)
            else:
                raise ProtocolError(ErrorCode.NOT_AUTHENTICATED, "send hello first")
            return
        match request:
            case Send():
                await self._send(request)
            case Edit():
                await self._change(request, KIND_EDIT, request.text)
            case Delete():
                await self._change(request, KIND_DELETE, "")
            case Join():
                await self._join(request)
            case Leave():
                await self._leave(request)
            case HistoryRequest():
                await self._history(request)
            case TypingRequest():
                await self._typing(request)
            case ReadRequest():
                await self._read(request)
            case SearchRequest():
                await self._search(request)
            case RoomUpdate() | Invite() | Kick() | Ban() | Unban() | Transfer() | SetRole():
                await self._room_request(request)
            case Hello():
                raise ProtocolError(ErrorCode.ALREADY_AUTHENTICATED, "hello was already accepted")

    async def _hello(self, hello: Hello) -> None:
        conn, s = self.conn, self.s
        conn.token_hash = token_hash(hello.token)
        s.tokens.track(conn)  # before the lookup: a logout during it must find this connection
        grant = await s.store.grant_for_token(hello.token)
        if conn.state is not ConnState.HELLO:  # closed (reaper, logout) while we looked
            return
        if grant is None:
            s.metrics.auth_failures_token += 1
            self.error(ErrorCode.BAD_TOKEN, "token is unknown or expired", hello.ref)
            conn.close(CloseCode.UNAUTHENTICATED, "bad token")
            return
        user = grant.user
        # The store's expiry is wall-clock time; the reaper reads trio's clock.
        conn.token_expires_at = trio.current_time() + grant.expires_at / 1000 - time.time()
        conn.user_id = user.id
        conn.user_name = user.name
        conn.set_state(ConnState.OPEN)
        rooms = await s.store.rooms_of(user.id)
        for room in rooms:
            s.membership.set(room, user.id, True)
        unread = {} if s.reads is None else await s.reads.of_rooms(user.id, rooms)
        conn.send_event(
            Welcome(
                user=user.name,
                protocol=PROTOCOL_VERSION,
                server_id=s.config.server.server_id,
                rooms=rooms,
                heartbeat=s.config.timeouts.heartbeat_interval,
                ref=hello.ref,
                unread=unread,
            )
        )
        resume = hello.resume or {}
        for room in resume:
            if room not in rooms:
                self.error(ErrorCode.NOT_MEMBER, f"not a member of {room}", hello.ref)
        for room in rooms:
            if room in resume:
                await self._resume(room, resume[room])
            else:
                s.hub.subscribe(room, conn)
        # Only now: a membership change elsewhere must not subscribe this connection while the
        # hello is still subscribing it (twice counted online) or before `welcome` went out.
        s.memberships.track(conn)

    async def _resume(self, room: str, last_seen: int) -> None:
        """Replay what the client missed in `room`, then go live, with no gap or duplicate."""
        conn, s = self.conn, self.s
        s.hub.subscribe(room, conn, hold=True)
        replayed_to = last_seen
        try:
            await s.hub.covered(room)
            last = await s.store.last_seq(room)
            if last - last_seen > s.config.chat.resume_max_gap:
                conn.send_event(Resync(room=room, last_seq=last, reason="gap_too_large"))
                replayed_to = last
            else:
                # A client claiming more than exists must not have new messages filtered out;
                # a replay that read past `last` (committed since) has queued those too.
                replayed_to = await self._replay(room, min(last_seen, last), last)
        finally:
            if room in conn.rooms:
                s.hub.release(room, conn, replayed_to)

    async def _replay(self, room: str, after: int, last: int) -> int:
        """Queue `room`'s messages after seq `after` (to `last`) at the client's pace: half the
        backlog bound at a time, each part once the one before is in the kernel's hands, since
        the bound is for clients that stop reading, not for catching up. A client that has not
        taken a part within `resume_stall_timeout` is a slow consumer. Returns the last seq
        queued."""
        conn, config = self.conn, self.s.config
        part = max(config.limits.outbound_limit // 2, 1)
        queued = 0
        while after < last:
            page = await self.s.store.messages_after(room, after, 500)
            if not page:
                break
            for message in page:
                frame = text_frame(encode(message))
                conn.enqueue(frame)
                queued += len(frame)
                if queued >= part:
                    queued = 0
                    with trio.move_on_after(config.chat.resume_stall_timeout) as waited:
                        await conn.wait_written()
                    if waited.cancelled_caught:
                        conn.close(CloseCode.SLOW_CONSUMER, "slow consumer", discard_backlog=True)
                    if conn.closing:
                        return message.seq
                    # It is reading, so it is alive: its Pong to a heartbeat Ping may be waiting
                    # unread behind this replay, which holds up the reading of requests.
                    conn.ping_sent_at = None
            after = page[-1].seq
        return after

    async def _member(self, room: str, ref: str | None) -> None:
        if not await self.s.membership.is_member(room, self.conn.user_id):
            raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of {room}", ref)

    def _spend_rate(self, ref: str | None) -> float:
        """Take one token from the user's bucket or refuse with `rate_limited` (nothing is
        stored or delivered); returns the time it read."""
        now = trio.current_time()
        if not self.s.limiter.allow(self.conn.user_id, now):
            self.s.metrics.rate_limited += 1
            raise ProtocolError(ErrorCode.RATE_LIMITED, "slow down: not stored or delivered", ref)
        return now

    async def _send(self, send: Send) -> None:
        conn, s = self.conn, self.s
        await self._member(send.room, send.ref)
        now = self._spend_rate(send.ref)
        if s.rules is not None and s.slow_gate is not None:
            await check_slow_mode(s.rules, s.slow_gate, send.room, conn.user_id, send.ref)
        message = NewMessage(
            room=send.room,
            user_id=conn.user_id,
            user_name=conn.user_name,
            text=send.text,
            client_id=send.client_id,
        )
        await s.writer.submit(PendingSend(message, conn, send.ref, now), last=self.last_read)

    async def _room_request(self, request: RoomRequest) -> None:
        if self.s.rooms is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "rooms are not administered here")
        actor = actor_of(self.conn.user_id, self.conn.user_name, self.conn.conn_id)
        self.conn.send_event(await answer_room_request(self.s.rooms, actor, request))

    async def _change(self, request: Edit | Delete, kind: int, text: str) -> None:
        """An edit or delete: checked against the message as committed, then queued like a send
        (its own seq, durable before delivered, acked, deduplicated by client_id)."""
        conn, s = self.conn, self.s
        await self._member(request.room, request.ref)
        target = await s.store.message(request.room, request.id)
        staff = False
        if target is not None and target.user != conn.user_name and kind == KIND_DELETE:
            staff = await s.store.role_of(request.room, conn.user_id) in STAFF
        check_change(target, conn.user_name, kind, request.id, request.ref, staff)
        now = self._spend_rate(request.ref)
        entry = NewMessage(
            request.room, conn.user_id, conn.user_name, text, request.client_id, kind, request.id
        )
        await s.writer.submit(PendingSend(entry, conn, request.ref, now), last=self.last_read)

    async def _join(self, join: Join) -> None:
        conn, s = self.conn, self.s
        try:
            await s.store.join_room(join.room, conn.user_id)
        except NotFound:  # also a private room the user is not in: the same answer
            raise ProtocolError(ErrorCode.NO_SUCH_ROOM, f"no room {join.room}", join.ref) from None
        except Banned:
            raise ProtocolError(ErrorCode.BANNED, f"banned from {join.room}", join.ref) from None
        await s.memberships.changed(join.room, conn.user_id, True, origin=conn)
        if conn.state is ConnState.OPEN:
            await s.memberships.subscribe(join.room, conn, join.ref)

    async def _leave(self, leave: Leave) -> None:
        conn, s = self.conn, self.s
        if s.rooms is not None:
            await s.rooms.check_leave(leave.room, conn.user_id)
        await s.store.leave_room(leave.room, conn.user_id)
        s.hub.unsubscribe(leave.room, conn)
        conn.send_event(Left(room=leave.room, ref=leave.ref))
        await s.memberships.changed(leave.room, conn.user_id, False, origin=conn)

    async def _history(self, request: HistoryRequest) -> None:
        await self._member(request.room, request.ref)
        messages, has_more = await self.s.store.history(
            request.room, request.before_seq, request.limit
        )
        self.conn.send_event(
            HistoryPage(room=request.room, messages=messages, has_more=has_more, ref=request.ref)
        )

    async def _typing(self, request: TypingRequest) -> None:
        conn, s = self.conn, self.s
        await self._member(request.room, request.ref)
        self._spend_rate(request.ref)
        payload = encode(Typing(room=request.room, user=conn.user_name))
        s.bus.publish_typing(request.room, payload, conn.conn_id)

    async def _read(self, request: ReadRequest) -> None:
        """Move the read cursor; the answer is `unread` with the cursor as stored, and the
        user's other connections, on every process, get the same event without `ref`."""
        conn, s = self.conn, self.s
        await self._member(request.room, request.ref)
        self._spend_rate(request.ref)  # each moves a database row: bounded like send
        if s.reads is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "read state is not served here", request.ref)
        try:
            state = await s.reads.mark(request.room, conn.user_id, request.seq, origin=conn.conn_id)
        except NotFound:
            raise ProtocolError(
                ErrorCode.NO_SUCH_ROOM, f"no room {request.room}", request.ref
            ) from None
        conn.send_event(
            Unread(
                room=request.room,
                read_seq=state.read_seq,
                last_seq=state.last_seq,
                count=state.count,
                ref=request.ref,
            )
        )

    async def _search(self, request: SearchRequest) -> None:
        """A page of `search_results` (server/chat/search.py); each costs a rate token, as a
        full-text query is a database read that a client could otherwise repeat at will."""
        self._spend_rate(request.ref)
        page = await search(
            self.s.store,
            self.conn.user_id,
            request.query,
            room=request.room,
            before=request.before,
            limit=request.limit,
            ref=request.ref,
        )
        self.conn.send_event(page)

    def closed(self) -> None:
        """Release everything the session holds in shared structures."""
        self.s.hub.unsubscribe_all(self.conn)
        self.s.memberships.untrack(self.conn)
        self.s.tokens.untrack(self.conn)

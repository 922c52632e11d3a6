"""The connection side of `ChatClient`: the session's state, and the one task (`_run`) that
connects, says hello, serves the connection and reconnects, dispatching what arrives.

The rules it keeps are in client/_client.py's docstring; `ChatClient` adds the request API.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from contextlib import suppress

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from protocol import (
    MAX_RESUME_ROOMS,
    Ack,
    CloseCode,
    Deleted,
    Edited,
    Error,
    ErrorCode,
    Event,
    Hello,
    HistoryPage,
    Joined,
    Left,
    Message,
    Pong,
    ProtocolError,
    Resync,
    SearchResults,
    Unread,
    Welcome,
    decode_event,
)

from ._backoff import Backoff
from ._errors import (
    AuthenticationError,
    ChatClientError,
    ClientClosed,
    LoginError,
    RequestError,
)
from ._events import ClientEvent, Disconnected, EventStream
from ._http import HttpApi
from ._requests import RequestQueue, encode_request
from ._socket import describe_failure, is_connection_failure, open_websocket
from ._unread import UnreadCounter

_NO_CLOSE_FRAME = 1006  # what trio-websocket reports when there was no close frame


class ConnectionLoop:
    """A chat session's state and its connection task; see `ChatClient`, which adds requests."""

    def __init__(
        self,
        api: HttpApi,
        ws_url: str,
        *,
        user: str,
        password: str | None,
        token: str,
        last_seq: Mapping[str, int],
        backoff: Backoff,
        keepalive: float | None,
        connect_timeout: float,
        event_buffer: int,
        rng: random.Random | None,
    ) -> None:
        self._api = api
        self._ws_url = ws_url
        self._password = password
        self._token = token
        self._token_refused = False
        self._last_seq: dict[str, int] = dict(last_seq)
        self._backoff = backoff
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._rng = rng
        self._requests = RequestQueue()
        self._hello_ref = ""
        self._session_scope: trio.CancelScope | None = None
        self._abort_reason = ""
        self._send_events, receive = trio.open_memory_channel[ClientEvent](event_buffer)
        self._events = EventStream(receive, lambda: self._fatal)
        self._fatal: ChatClientError | None = None
        self._closing = False
        self._settled = trio.Event()  # the first welcome arrived, or the client failed
        self._rooms: frozenset[str] = frozenset()
        # Rooms `create_room` is creating: the server announces the creator's new membership to
        # all their connections, this one included; here that `joined` is our own doing.
        self._creating: set[str] = set()
        self._unread = UnreadCounter(user)
        self.user = user
        self.server_id = ""
        self.dropped_duplicates = 0  # messages the server sent twice (never handed on)
        self.connections = 0  # welcomes received: 1 + the number of reconnects

    # The connection loop --------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                code, reason, welcomed = await self._one_connection()
                if self._closing:
                    return
                if welcomed:
                    attempt = 0
                delay = self._backoff.delay(attempt, self._rng)
                attempt += 1
                await self._emit(Disconnected(code=code, reason=reason, retry_in=delay))
                await trio.sleep(delay)
        except ChatClientError as exc:
            self._fail(exc)

    async def _one_connection(self) -> tuple[int | None, str, bool]:
        """Connect, hello, serve until the connection ends: (close code, reason, welcomed)."""
        ws: WebSocketConnection | None = None
        welcomed = False
        failure = ""
        self._abort_reason = ""
        with trio.CancelScope() as scope:
            self._session_scope = scope
            scope.deadline = trio.current_time() + self._connect_timeout
            try:
                if self._token_refused:
                    await self._log_in_again()
                async with open_websocket(self._ws_url) as ws:
                    welcome = await self._handshake(ws)
                    if welcome is not None:
                        welcomed = True
                        scope.deadline = math.inf
                        await self._serve(ws, welcome)
            except Exception as exc:
                if not is_connection_failure(exc):
                    raise
                failure = describe_failure(exc)
            finally:
                self._requests.disconnected()
                self._session_scope = None
        if scope.cancelled_caught and not self._abort_reason:
            self._abort_reason = f"no welcome within {self._connect_timeout:g} s"
        if self._token_refused:
            return CloseCode.UNAUTHENTICATED, "token refused", welcomed
        closed = ws.closed if ws is not None else None
        # 1006 is no code at all: the connection ended without a close frame.
        if closed is not None and closed.code != _NO_CLOSE_FRAME and not self._abort_reason:
            if closed.code == CloseCode.UNAUTHENTICATED:
                self._token_refused = True
            return int(closed.code), closed.reason or closed.name, welcomed
        return None, self._abort_reason or failure or "connection lost", welcomed

    async def _handshake(self, ws: WebSocketConnection) -> Welcome | None:
        resume = dict(itertools.islice(self._last_seq.items(), MAX_RESUME_ROOMS))
        self._hello_ref = self._requests.new_ref("h")
        hello = Hello(token=self._token, resume=resume or None, ref=self._hello_ref)
        await ws.send_message(encode_request(hello))
        while True:  # bounded by the connection's deadline
            try:
                event = decode_event(await ws.get_message())
            except ProtocolError:
                continue
            if isinstance(event, Welcome):
                return event
            if isinstance(event, Error) and event.code == ErrorCode.BAD_TOKEN:
                self._token_refused = True
                return None  # the server closes with 4001 next

    async def _log_in_again(self) -> None:
        if self._password is None:
            raise AuthenticationError("the server refused the token and no password was given")
        try:
            session = await self._api.login(self.user, self._password)
        except LoginError as exc:
            raise AuthenticationError(f"logging in again failed: {exc}") from exc
        self._token, self._token_refused = session.token, False

    async def _serve(self, ws: WebSocketConnection, welcome: Welcome) -> None:
        self.user, self.server_id = welcome.user, welcome.server_id
        self._rooms = frozenset(welcome.rooms)
        self._unread.welcome(welcome)
        for room in list(self._last_seq):
            if room not in self._rooms:
                del self._last_seq[room]  # no longer a member: nothing to resume
        self.connections += 1
        await self._emit(welcome)  # before any replayed message
        if not self._settled.is_set():
            self._settled.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, ws, nursery.cancel_scope)
            if self._keepalive is not None:
                nursery.start_soon(self._check_liveness, ws, self._keepalive)
            await self._requests.resend(ws)

    async def _read(self, ws: WebSocketConnection, connection: trio.CancelScope) -> None:
        try:
            while True:
                await self._dispatch(await ws.get_message())
        except ConnectionClosed:
            connection.cancel()

    async def _check_liveness(self, ws: WebSocketConnection, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(interval) as waiting:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return
            if waiting.cancelled_caught and self._session_scope is not None:
                self._abort_reason = f"no Pong within {interval:g} s"
                self._session_scope.cancel()
                return

    # Incoming events ------------------------------------------------------------------------
    async def _dispatch(self, data: str | bytes) -> None:
        try:
            event = decode_event(data)
        except ProtocolError:
            return  # an event type or shape this client does not know: ignored, as v1 asks
        match event:
            case Message() | Edited() | Deleted():
                await self._room_entry(event)
            case Unread(ref=ref):
                self._unread.unread(event)
                if ref is None or self._requests.get(ref) is None:
                    await self._emit(event)  # moved elsewhere (or an answer nobody waits for)
                else:
                    self._answer(ref, event)
            case Resync(room=room, last_seq=last_seq):
                self._last_seq[room] = last_seq
                await self._emit(event)
            case Ack():
                self._answer(event.ref, event, event.client_id)
            case Joined(room=room):
                self._rooms |= {room}
                self._last_seq.setdefault(room, event.last_seq)
                self._unread.joined(room, event.last_seq)
                await self._answer_or_emit(event)
            case Left(room=room):
                self._rooms -= {room}
                self._last_seq.pop(room, None)
                self._unread.left(room)
                await self._answer_or_emit(event)
            case HistoryPage() | Pong() | SearchResults():
                self._answer(event.ref, event)
            case Error(ref=ref) if (pending := self._requests.get(ref)) is not None:
                if event.code == ErrorCode.MESSAGE_DELETED and pending.change is not None:
                    pending.settle(pending.change)  # a re-sent change that was already done
                    return
                error = RequestError(event.code, event.message, client_id=pending.client_id)
                pending.settle(error=error)
            case Error(ref=ref) if ref == self._hello_ref and event.code == ErrorCode.NOT_MEMBER:
                pass  # a resumed room we were removed from: `welcome.rooms` already said so
            case _:
                await self._emit(event)

    async def _room_entry(self, event: Message | Edited | Deleted) -> None:
        """A message, edit or delete: each takes a seq, so each moves the resume cursor, and one
        at or below it was delivered already (dropped, counted in `dropped_duplicates`)."""
        last = self._last_seq.get(event.room)
        if last is not None and event.seq <= last:
            self.dropped_duplicates += 1
            return
        self._last_seq[event.room] = event.seq
        if isinstance(event, Message):
            self._unread.message(event)
        else:
            if isinstance(event, Deleted):
                self._unread.deleted(event)
            pending = self._requests.get(None, event.client_id) if event.client_id else None
            if pending is not None:
                pending.change = Ack(
                    room=event.room,
                    id=event.id,
                    seq=event.seq,
                    client_id=event.client_id,
                    duplicate=True,
                )
        await self._emit(event)

    def _answer(self, ref: str | None, event: Event, client_id: str | None = None) -> None:
        pending = self._requests.get(ref, client_id)
        if pending is not None:
            pending.settle(event)

    async def _answer_or_emit(self, event: Joined | Left) -> None:
        """Answer our own join/leave; one without a ref happened on another connection of this
        user (or over HTTP), and goes to `events()`, unless it is a room we are creating."""
        if event.ref is not None:
            self._answer(event.ref, event)
        elif not (isinstance(event, Joined) and event.room in self._creating):
            await self._emit(event)

    async def _emit(self, event: ClientEvent) -> None:
        with suppress(trio.ClosedResourceError):  # closing: nobody will read it
            await self._send_events.send(event)

    # Ending ---------------------------------------------------------------------------------
    def _fail(self, exc: ChatClientError) -> None:
        self._fatal = exc
        self._requests.fail_all(exc)
        self._send_events.close()
        self._settled.set()

    async def _close(self) -> None:
        self._closing = True
        ws = self._requests.ready
        if ws is not None:
            # Say goodbye (1000) even when the caller's block is being cancelled, briefly.
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await ws.aclose()
        self._requests.fail_all(ClientClosed("the client is closed"))
        self._send_events.close()

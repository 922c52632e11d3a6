"""`ChatClient`: one chat session that outlives any single WebSocket connection.

Rules the client keeps (docs/protocol.md, "Recommended client loop"):
- `_last_seq[room]` is the highest `seq` the application has been given for the room (of a
  `message`, `edited` or `deleted`: each takes a seq); `hello` resumes from it, and an entry at
  or below it is dropped (counted in `dropped_duplicates`).
- Every request waits in `_requests` until answered, and is written again on the next
  connection if the one it went out on dropped (rules in `_requests.py`). A `send`, `edit` or
  `delete` keeps its `client_id`, so the server stores it at most once and acks a repeat with
  the original `id`/`seq`.
- Unread counts follow docs/protocol.md's *Read state* (rules in `_unread.py`).
- A connection becomes *ready* for requests once `welcome` arrived and the waiting requests were
  re-sent; the `Welcome` event is queued before any replayed `message`.
- One task (`_run`) owns the connection loop; the caller's tasks only make requests. Reconnects
  wait `Backoff.delay(attempt)`; `attempt` resets after a `welcome`.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import TypeVar

import httpx
import trio
from trio_websocket import ConnectionClosed

from protocol import (
    DEFAULT_SEARCH_LIMIT,
    Ack,
    Delete,
    Edit,
    Event,
    HistoryPage,
    HistoryRequest,
    Join,
    Joined,
    Leave,
    Left,
    Ping,
    Pong,
    ReadRequest,
    Request,
    RoomUnread,
    SearchRequest,
    SearchResults,
    Send,
    TypingRequest,
    Unread,
)

from ._backoff import Backoff
from ._connection_loop import ConnectionLoop
from ._errors import ApiError, AuthenticationError, ClientClosed
from ._events import ClientEvent
from ._http import HttpApi, RoomInfo, endpoints
from ._requests import encode_request

_E = TypeVar("_E", bound=Event)


class ChatClient(ConnectionLoop):
    """A logged-in user's chat session: requests, an event stream, reconnect with resume.

    Make one with `async with ChatClient.connect(...) as client:`; it runs its connection task in
    a nursery owned by that block and closes cleanly (WebSocket close 1000) when the block exits.
    """

    # Construction ---------------------------------------------------------------------------
    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        server: str,
        user: str,
        password: str | None = None,
        *,
        token: str | None = None,
        register: bool = False,
        resume: Mapping[str, int] | None = None,
        backoff: Backoff | None = None,
        keepalive: float | None = 20.0,
        connect_timeout: float = 10.0,
        event_buffer: int = 10_000,
        rng: random.Random | None = None,
    ) -> AsyncIterator[ChatClient]:
        """Log in over HTTP (or `register` first), connect, and yield once `welcome` arrived.

        `server` is the HTTP base URL (`http://HOST:PORT`); the WebSocket is `ws://HOST:PORT/ws`.
        With a `token`, no login happens; a `password` also lets the client log in again if the
        token expires. `resume` maps rooms to the last `seq` already seen (e.g. saved by the
        application); by default it is each member room's latest `seq` from `GET /api/rooms`,
        so everything after that moment is delivered, across any reconnect. `keepalive` is
        the interval of the client's own WebSocket Pings (a connection whose Pong does not come
        back within the same time is dropped and replaced); `None` turns them off. A connection
        attempt (TCP, WebSocket handshake, `hello` to `welcome`) is given `connect_timeout`.

        Raises `LoginError` (HTTP refused the login), `AuthenticationError` (token refused and
        no password) or `httpx.HTTPError` (the server is unreachable over HTTP).
        """
        http_base, ws_url = endpoints(server)
        async with httpx.AsyncClient(base_url=http_base, timeout=30.0) as http:
            api = HttpApi(http)
            token, resume = await _session(api, user, password, token, register, resume)
            client = cls(
                api,
                ws_url,
                user=user,
                password=password,
                token=token,
                last_seq=resume,
                backoff=backoff or Backoff(),
                keepalive=keepalive,
                connect_timeout=connect_timeout,
                event_buffer=event_buffer,
                rng=rng,
            )
            async with client._running():
                yield client

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        """Run the connection task for the caller's block, once the first `welcome` arrived (or
        raise why none will); close the client when the block ends."""
        body_error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run)
                await self._settled.wait()
                if self._fatal is None:
                    try:
                        yield
                    except BaseException as exc:
                        body_error = exc
                        raise
                    finally:
                        await self._close()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The nursery wraps what the caller's block raised: hand it back unwrapped.
            if body_error is not None and list(group.exceptions) == [body_error]:
                raise body_error from None
            raise
        if self._fatal is not None and body_error is None and self.connections == 0:
            raise self._fatal

    # Public API -----------------------------------------------------------------------------
    @property
    def rooms(self) -> frozenset[str]:
        """Rooms this connection is subscribed to: `welcome.rooms`, plus joins, less leaves."""
        return self._rooms

    @property
    def last_seq(self) -> dict[str, int]:
        """Per room, the highest `seq` handed to the application (what a reconnect resumes)."""
        return dict(self._last_seq)

    @property
    def connected(self) -> bool:
        return self._requests.ready is not None

    @property
    def token(self) -> str:
        return self._token

    def events(self) -> AsyncIterator[ClientEvent]:
        """The stream of events (one consumer): messages, edits and deletes (`Message`,
        `Edited`, `Deleted`) in `seq` order per room, without gaps or duplicates across
        reconnects; `Unread` when the read cursor moved elsewhere (another connection of the
        user, or HTTP); presence, typing, resync, unmatched errors; a
        `Welcome` on each (re)connect and a `Disconnected` when a connection is lost.

        The buffer is bounded (`event_buffer`): if the application stops reading, the client
        stops reading the socket, and the server eventually closes it (4008); the client then
        reconnects and resumes, so nothing is lost.
        """
        return self._events

    async def send(self, room: str, text: str, *, client_id: str | None = None) -> Ack:
        """Post `text`; returns the `ack` once the message is stored (and delivered).

        The message is kept until acknowledged and re-sent after a reconnect with the same
        `client_id` (a random one by default); a repeat is acked with the original `id` and
        `seq` and `duplicate=True`. Raises `RequestError` (`not_member`, `text_empty`,
        `text_too_long`, `text_invalid`, `rate_limited`, `unavailable`).
        """
        client_id = client_id or _new_client_id()

        def build(ref: str) -> Request:
            return Send(room=room, text=text, client_id=client_id, ref=ref)

        return await self._request(build, Ack, client_id=client_id)

    async def edit(self, room: str, id: int, text: str, *, client_id: str | None = None) -> Ack:
        """Replace the text of the user's own message `id`; the `ack` (the message's `id`, the
        edit's own `seq`) comes once the edit is stored and the room got `edited`.

        Kept and re-sent after a reconnect with its `client_id`, as `send` is: a repeat is acked
        with `duplicate=True`; one the server answers `message_deleted` after this client saw
        its own `edited` (the message was deleted since) is answered with that edit, duplicate.
        Raises `RequestError` (`not_member`, `no_such_message`, `not_author`,
        `message_deleted`, `text_empty`, `text_too_long`, `text_invalid`, `rate_limited`,
        `unavailable`).
        """
        client_id = client_id or _new_client_id()

        def build(ref: str) -> Request:
            return Edit(room=room, id=id, text=text, client_id=client_id, ref=ref)

        return await self._request(build, Ack, client_id=client_id)

    async def delete(self, room: str, id: int, *, client_id: str | None = None) -> Ack:
        """Delete the user's own message `id` (a tombstone stays in history); the `ack` (the
        message's `id`, the delete's own `seq`) comes once it is stored.

        Re-sent after a reconnect with its `client_id`: the server answers a repeat
        `message_deleted`, so once this client has seen its own `deleted` (live or replayed on
        resume, which comes first) that answer is turned into the `ack`, `duplicate=True`.
        Raises `RequestError` (`not_member`, `no_such_message`, `not_author`,
        `message_deleted`: deleted before, by another request; `rate_limited`, `unavailable`).
        """
        client_id = client_id or _new_client_id()

        def build(ref: str) -> Request:
            return Delete(room=room, id=id, client_id=client_id, ref=ref)

        return await self._request(build, Ack, client_id=client_id)

    async def mark_read(self, room: str, seq: int) -> Unread:
        """Move the user's read cursor in `room` to `seq` (forward only; clamped to the room's
        last seq); returns the state as stored, which `unread` then shows. The user's other
        connections get it as an `Unread` event. Spends one token of the rate limit: mark when
        the user looks, not per message. Raises `RequestError` (`not_member`, `no_such_room`,
        `rate_limited`, `bad_field`).
        """
        return await self._request(lambda ref: ReadRequest(room=room, seq=seq, ref=ref), Unread)

    @property
    def unread(self) -> dict[str, int]:
        """Per member room, how many messages by other users are unread (docs/protocol.md,
        *Read state*): the server's count at the last `welcome`/`unread`, plus the messages by
        others received after it, less those deleted since. The server counts at most 1000."""
        return self._unread.counts()

    @property
    def read_state(self) -> dict[str, RoomUnread]:
        """Per member room, the latest read state the server gave (`read_seq`, `last_seq`,
        `count`), which `unread` counts from."""
        return {
            room: state for room in self._rooms if (state := self._unread.state(room)) is not None
        }

    async def join(self, room: str) -> Joined:
        """Become a member of `room` (it must exist) and subscribe; `RequestError` no_such_room."""
        return await self._request(lambda ref: Join(room=room, ref=ref), Joined)

    async def leave(self, room: str) -> Left:
        return await self._request(lambda ref: Leave(room=room, ref=ref), Left)

    async def history(
        self, room: str, *, before_seq: int | None = None, limit: int = 50
    ) -> HistoryPage:
        """One page, oldest first: the latest `limit` messages, or those before `before_seq`."""

        def build(ref: str) -> Request:
            return HistoryRequest(room=room, before_seq=before_seq, limit=limit, ref=ref)

        return await self._request(build, HistoryPage)

    async def history_pages(
        self, room: str, *, limit: int = 50, before_seq: int | None = None
    ) -> AsyncIterator[HistoryPage]:
        """Pages from the newest backwards (keyset pagination on `seq`) until `has_more` is off."""
        while True:
            page = await self.history(room, before_seq=before_seq, limit=limit)
            yield page
            if not page.has_more or not page.messages:
                return
            before_seq = page.messages[0].seq

    async def search(
        self,
        query: str,
        *,
        room: str | None = None,
        before: str | None = None,
        limit: int = DEFAULT_SEARCH_LIMIT,
    ) -> SearchResults:
        """One page of full-text search over the user's rooms (or `room`), newest first;
        pass the page's `next` as `before` for the one after (`next` is None on the last)."""

        def build(ref: str) -> Request:
            return SearchRequest(query=query, room=room, before=before, limit=limit, ref=ref)

        return await self._request(build, SearchResults)

    async def typing(self, room: str) -> None:
        """Tell the room the user is typing (fire and forget: dropped while disconnected)."""
        ws = self._requests.ready
        if ws is not None:
            frame = encode_request(TypingRequest(room=room))
            with suppress(ConnectionClosed):
                await ws.send_message(frame)

    async def ping(self) -> float:
        """Application-level round trip to the server, in seconds."""
        start = trio.current_time()
        await self._request(lambda ref: Ping(ref=ref), Pong)
        return trio.current_time() - start

    async def list_rooms(self) -> list[RoomInfo]:
        """Every room (HTTP `GET /api/rooms`): its latest `seq`, whether the user is a member."""
        return await self._api.rooms(self._token)

    async def create_room(self, room: str) -> Joined:
        """Create `room` (HTTP `POST /api/rooms`; the creator becomes a member) and subscribe.

        The user's other connections get a `Joined` event; this client does not (it answered
        this call): the server's `joined` without a ref reaches this connection before the
        answer to the `join` that follows on the same connection, so it is recognised here.
        """
        self._creating.add(room)
        try:
            await self._api.create_room(self._token, room)
            return await self.join(room)
        finally:
            self._creating.discard(room)

    # Requests -------------------------------------------------------------------------------
    async def _request(
        self,
        build: Callable[[str], Request],
        expect: type[_E],
        *,
        client_id: str | None = None,
    ) -> _E:
        if self._fatal is not None:
            raise self._fatal
        if self._closing:
            raise ClientClosed("the client is closed")
        return await self._requests.call(build, expect, client_id)


async def _session(
    api: HttpApi,
    user: str,
    password: str | None,
    token: str | None,
    register: bool,
    resume: Mapping[str, int] | None,
) -> tuple[str, Mapping[str, int]]:
    """A usable token, and where to resume each room from (default: each member room's latest
    `seq` now, so that everything from this moment on is delivered)."""
    if token is None:
        if password is None:
            raise ValueError("connect() needs a password or a token")
        token = (await api.login(user, password, register=register)).token
    if resume is not None:
        return token, resume
    try:
        rooms = await api.rooms(token)
    except ApiError as exc:
        if exc.status != 401:
            raise
        if password is None:
            raise AuthenticationError("the server refused the token") from exc
        token = (await api.login(user, password)).token
        rooms = await api.rooms(token)
    return token, {room.name: room.last_seq for room in rooms if room.member}


def _new_client_id() -> str:
    """Time-ordered (ms clock first, then randomness, like UUIDv7): the server's client_id index
    then grows at its end instead of at random places, which keeps group commit cheap."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"

"""The Python client library against a real server: chat, acks, history pages, and reconnect
with resume when a connection is dropped (a TCP relay in between breaks it on demand)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio

from client import (
    AuthenticationError,
    Backoff,
    ChatClient,
    ClientEvent,
    Disconnected,
    LoginError,
    RequestError,
)
from protocol import Ack, CloseCode, Joined, Left, Message, Welcome

from ..conftest import (
    STEP,
    Account,
    RunningServer,
    create_room,
    join_room,
    make_config,
    register,
    running_server,
)

PASSWORD = "correct horse"  # what conftest.register uses
FAST = Backoff(initial=0.05, maximum=0.5)
_T = TypeVar("_T")


class TcpProxy:
    """A TCP relay in front of the server, to fail connections as a network or a server would.

    `cut()` drops every relayed connection; `close()` also stops listening (connections are
    refused) until `reopen()`; `mute` swallows what the server sends (answers lost in flight).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.mute = False
        self.relayed = 0
        self._links: set[trio.CancelScope] = set()
        self._serving = trio.CancelScope()
        self._reopened = trio.Event()

    async def run(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        while True:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            if not self.port:
                self.port = listeners[0].socket.getsockname()[1]
                task_status.started(self.port)
            with self._serving:
                await trio.serve_listeners(self._relay, listeners)
            await self._reopened.wait()
            self._serving = trio.CancelScope()

    def cut(self) -> None:
        for link in list(self._links):
            link.cancel()

    def close(self) -> None:
        self._reopened = trio.Event()
        self._serving.cancel()
        self.cut()

    def reopen(self) -> None:
        self._reopened.set()

    async def _relay(self, downstream: trio.SocketStream) -> None:
        async with downstream:
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
            except OSError:
                return
            async with upstream:
                self.relayed += 1
                with trio.CancelScope() as link:
                    self._links.add(link)
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._pump, downstream, upstream, False, link)
                            nursery.start_soon(self._pump, upstream, downstream, True, link)
                    finally:
                        self._links.discard(link)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, to_client: bool, link: Any
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                if not (to_client and self.mute):
                    await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        link.cancel()  # one side ended: end the other too


@asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[TcpProxy]:
    async with trio.open_nursery() as nursery:
        proxy = TcpProxy(port)
        await nursery.start(proxy.run)
        yield proxy
        nursery.cancel_scope.cancel()


def chat(server: str | RunningServer, account: Account, **options: Any) -> Any:
    base = server.http if isinstance(server, RunningServer) else server
    options.setdefault("backoff", FAST)
    options.setdefault("rng", random.Random(5))
    return ChatClient.connect(base, account.name, PASSWORD, **options)


async def next_of(events: AsyncIterator[ClientEvent], kind: type[_T]) -> _T:
    """The next event of type `kind`, passing over others (presence, typing, ...)."""
    with trio.fail_after(STEP):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"the event stream ended before a {kind.__name__}")


async def texts(events: AsyncIterator[ClientEvent], count: int) -> list[tuple[int, str]]:
    """(seq, text) of the next `count` messages."""
    got = []
    for _ in range(count):
        message = await next_of(events, Message)
        got.append((message.seq, message.text))
    return got


async def users_in_room(http: httpx.AsyncClient, room: str) -> list[Account]:
    accounts = [await register(http) for _ in range(2)]
    await create_room(http, accounts[0], room)
    for account in accounts[1:]:
        await join_room(http, account, room)
    return accounts


async def test_two_clients_chat_and_send_returns_the_ack(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with chat(server, alice) as a, chat(server, bob) as b:
        assert a.rooms == b.rooms == {"lobby"} and a.user == alice.name
        ack = await a.send("lobby", "hello bob", client_id="c1")
        assert (ack.room, ack.seq, ack.client_id, ack.duplicate) == ("lobby", 1, "c1", False)
        got = await next_of(b.events(), Message)
        assert (got.id, got.seq, got.user, got.text) == (ack.id, 1, alice.name, "hello bob")
        reply = await b.send("lobby", "hi alice")
        assert reply.seq == 2
        assert await texts(a.events(), 2) == [(1, "hello bob"), (2, "hi alice")]


async def test_membership_changed_on_another_connection_arrives_as_an_event(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    await create_room(http, alice, "dev")
    async with chat(server, bob) as phone, chat(server, bob) as laptop:
        events = laptop.events()
        joined = await phone.join("dev")
        assert joined.ref is not None  # the answer to phone's own request
        elsewhere = await next_of(events, Joined)
        assert (elsewhere.room, elsewhere.ref) == ("dev", None)
        assert laptop.rooms == {"lobby", "dev"}
        await phone.leave("lobby")
        gone = await next_of(events, Left)
        assert (gone.room, gone.ref) == ("lobby", None)
        assert laptop.rooms == {"dev"}


async def test_request_errors_carry_the_protocol_code(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, _ = await users_in_room(http, "lobby")
    other = await register(http)
    await create_room(http, other, "private")
    async with chat(server, alice) as a:
        with pytest.raises(RequestError) as refused:
            await a.send("private", "let me in", client_id="x1")
        assert (refused.value.code, refused.value.client_id) == ("not_member", "x1")
        with pytest.raises(RequestError, match="text_too_long"):
            await a.send("lobby", "x" * 4001)
        with pytest.raises(RequestError, match="no_such_room"):
            await a.join("nowhere")
        joined = await a.join("private")
        assert joined.room == "private" and a.rooms == {"lobby", "private"}
        assert (await a.send("private", "in now")).seq == 1


async def test_login_with_a_wrong_password_raises_login_error(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice = await register(http)
    with pytest.raises(LoginError) as refused:
        async with ChatClient.connect(server.http, alice.name, "wrong password"):
            pass
    assert (refused.value.status, refused.value.code) == (401, "bad_credentials")


async def test_an_error_raised_in_the_clients_block_comes_out_of_connect_unwrapped(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, _ = await users_in_room(http, "lobby")

    class Raised(Exception):
        pass

    with trio.fail_after(STEP), pytest.raises(Raised) as raised:
        async with chat(server, alice) as a:
            raise Raised("from the block")
    assert not a.connected  # closed on the way out
    assert str(raised.value) == "from the block"
    # Not a group of one: the client's nursery hands back exactly what the block raised.
    assert not isinstance(raised.value, BaseExceptionGroup)


async def test_a_refused_token_needs_the_password_to_log_in_again(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, _ = await users_in_room(http, "lobby")
    with pytest.raises(AuthenticationError):
        async with ChatClient.connect(server.http, alice.name, token="revoked-or-made-up"):
            pass
    # With the password, a token refused by `hello` (close 4001) is replaced by a fresh login.
    options: dict[str, Any] = {"token": "revoked-or-made-up", "resume": {}, "backoff": FAST}
    async with ChatClient.connect(server.http, alice.name, PASSWORD, **options) as a:
        assert a.token != "revoked-or-made-up" and a.rooms == {"lobby"}
        assert (await a.send("lobby", "back in")).seq == 1


async def test_register_then_create_a_room(server: RunningServer) -> None:
    async with ChatClient.connect(server.http, "carol", PASSWORD, register=True) as c:
        joined = await c.create_room("garden")
        assert (joined.room, joined.last_seq, joined.online) == ("garden", 0, ["carol"])
        rooms = await c.list_rooms()
        assert [(r.name, r.member) for r in rooms] == [("garden", True)]


async def test_a_room_the_client_creates_is_not_reported_as_joined_elsewhere(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice = await register(http)
    async with chat(server, alice) as phone, chat(server, alice) as laptop:
        joined = await phone.create_room("garden")
        assert joined.room == "garden" and phone.rooms == {"garden"}
        # The server tells every connection of the user, phone's own included, of the new
        # membership; for phone that is the answer to what it did, not news from elsewhere.
        elsewhere = await next_of(laptop.events(), Joined)
        assert (elsewhere.room, elsewhere.ref) == ("garden", None)
        await phone.send("garden", "first")
        seen: list[ClientEvent] = []
        with trio.fail_after(STEP):
            async for event in phone.events():
                seen.append(event)
                if isinstance(event, Message):
                    break
        assert not [event for event in seen if isinstance(event, Joined)], seen


async def test_reconnect_after_the_connection_drops_resumes_exactly_the_missed_messages(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with (
        proxy_to(server.port) as proxy,
        chat(server, alice) as a,
        chat(f"http://127.0.0.1:{proxy.port}", bob) as b,
    ):
        events = b.events()
        await a.send("lobby", "before")
        assert await texts(events, 1) == [(1, "before")]
        proxy.close()  # the connection drops, and reconnecting fails until reopen()
        lost = await next_of(events, Disconnected)
        assert lost.code is None and not b.connected
        for i in range(3):
            await a.send("lobby", f"missed {i}")
        proxy.reopen()
        assert (await next_of(events, Welcome)).user == bob.name
        assert await texts(events, 3) == [(2, "missed 0"), (3, "missed 1"), (4, "missed 2")]
        await a.send("lobby", "after")
        assert await texts(events, 1) == [(5, "after")]
        assert (b.connections, b.dropped_duplicates, b.last_seq) == (2, 0, {"lobby": 5})


async def test_server_restart_closes_with_1001_and_the_client_resumes_on_the_new_one(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    async with trio.open_nursery() as nursery:

        async def run(task_status: trio.TaskStatus[tuple[RunningServer, trio.Event]]) -> None:
            async with running_server(config) as handle:
                release = trio.Event()
                task_status.started((handle, release))
                await release.wait()

        first, stop_first = await nursery.start(run)
        async with httpx.AsyncClient(base_url=first.http, timeout=STEP) as http:
            alice, bob = await users_in_room(http, "lobby")
        async with proxy_to(first.port) as proxy:
            via_proxy = f"http://127.0.0.1:{proxy.port}"
            async with chat(via_proxy, bob, backoff=Backoff(0.5, 1.0), connect_timeout=2) as b:
                events = b.events()
                stop_first.set()  # graceful shutdown: 1001 to every connection
                lost = await next_of(events, Disconnected)
                assert lost.code == CloseCode.GOING_AWAY
                proxy.close()  # refuse the reconnects until the new server is up
                with trio.fail_after(STEP * 2):
                    await first.done.wait()
                second, stop_second = await nursery.start(run)
                async with chat(second, alice) as a:
                    await a.send("lobby", "while bob was away")
                proxy.target_port = second.port
                proxy.reopen()
                assert await texts(events, 1) == [(1, "while bob was away")]
                assert b.connections == 2 and b.dropped_duplicates == 0
        stop_second.set()


async def test_unacked_send_is_resent_after_reconnect_and_stored_once(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with (
        proxy_to(server.port) as proxy,
        chat(server, bob) as b,
        chat(f"http://127.0.0.1:{proxy.port}", alice) as a,
    ):
        proxy.mute = True  # alice's frames reach the server; its answers are lost
        async with trio.open_nursery() as nursery:
            acks: list[Ack] = []

            async def send() -> None:
                acks.append(await a.send("lobby", "only once", client_id="once-1"))

            nursery.start_soon(send)
            stored = await next_of(b.events(), Message)  # stored and delivered...
            assert stored.client_id == "once-1" and not acks  # ...but alice has no ack
            proxy.mute = False
            proxy.cut()
        [ack] = acks
        assert (ack.id, ack.seq, ack.duplicate) == (stored.id, stored.seq, True)
        await a.send("lobby", "next")
        assert await texts(b.events(), 1) == [(2, "next")]  # no second "only once"
        page = await a.history("lobby")
        assert [m.text for m in page.messages] == ["only once", "next"]
        assert a.connections == 2


async def test_resending_a_client_id_is_acked_as_duplicate(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, _ = await users_in_room(http, "lobby")
    async with chat(server, alice) as a:
        first = await a.send("lobby", "hi", client_id="same")
        again = await a.send("lobby", "hi", client_id="same")
        assert (again.id, again.seq, again.duplicate) == (first.id, first.seq, True)


async def test_history_pages_walk_back_with_keyset_pagination(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, _ = await users_in_room(http, "archive")
    body = {"messages": [{"text": f"m{i}"} for i in range(1, 121)]}
    response = await http.post(
        "/api/rooms/archive/messages:batch",
        json=body,
        headers={"Authorization": f"Bearer {alice.token}"},
    )
    assert response.status_code == 201, response.text
    async with chat(server, alice) as a:
        newest = await a.history("archive", limit=50)
        assert [m.seq for m in newest.messages] == list(range(71, 121)) and newest.has_more
        older = await a.history("archive", before_seq=71, limit=50)
        assert [m.seq for m in older.messages] == list(range(21, 71))
        pages = [page async for page in a.history_pages("archive", limit=50)]
        assert [len(p.messages) for p in pages] == [50, 50, 20]
        assert [p.has_more for p in pages] == [True, True, False]
        seen = [m.text for p in reversed(pages) for m in p.messages]
        assert seen == [f"m{i}" for i in range(1, 121)]


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0)
    rng = random.Random(1)
    for attempt, cap in enumerate([1.0, 2.0, 4.0, 8.0, 8.0, 8.0]):
        delays = {backoff.delay(attempt, rng) for _ in range(50)}
        assert all(cap / 2 <= d <= cap for d in delays), (attempt, delays)
        assert len(delays) == 50  # jittered: no two clients retry in lockstep
    with pytest.raises(ValueError):
        Backoff(initial=0)

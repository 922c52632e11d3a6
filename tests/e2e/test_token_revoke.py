"""A token that is logged out or expires closes the WebSockets that said hello with it (4001),
on every connection that used it and on no other (real server, real sockets)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from client import open_websocket
from protocol import CloseCode
from server.chat.connection import ChatConnection, ConnState
from server.chat.token_index import TokenIndex
from server.transport.flusher import Flusher

from ..conftest import (
    STEP,
    Account,
    Connect,
    Peer,
    create_room,
    make_config,
    register,
    running_server,
)
from ..connections import chat_connection

REAPER_TICK = 1.0  # the reaper's longest tick: the documented bound on closing at expiry


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _log_in(http: httpx.AsyncClient, account: Account) -> Account:
    """The same user with a second token."""
    response = await http.post(
        "/api/login", json={"name": account.name, "password": "correct horse"}
    )
    assert response.status_code == 200, response.text
    return Account(account.name, response.json()["token"])


async def _closed_with(ws: WebSocketConnection, code: int, reason: str) -> None:
    """Read (and drop) events until the server closes; it must be with `code` and `reason`."""
    with trio.fail_after(STEP), pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    assert closed.value.reason is not None
    assert (closed.value.reason.code, closed.value.reason.reason) == (code, reason)


async def test_logout_closes_the_tokens_connections_and_a_later_send_is_not_stored(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice = await register(http)
    await create_room(http, alice, "lobby")
    again = await _log_in(http, alice)
    async with connect(alice) as first, connect(alice) as second, connect(again) as other:
        response = await http.post("/api/logout", headers=_auth(alice.token))
        assert response.status_code == 204
        # Whether or not this still reaches the socket, the server must not act on it.
        with contextlib.suppress(ConnectionClosed):
            await first.send(type="send", room="lobby", text="after logout", ref="late")
        await _closed_with(first.ws, CloseCode.UNAUTHENTICATED, "token revoked")
        await _closed_with(second.ws, CloseCode.UNAUTHENTICATED, "token revoked")
        # The same user's connection with another token is still served.
        await other.send(type="send", room="lobby", text="still here", ref="s")
        assert (await other.expect("message"))["text"] == "still here"
        assert (await other.expect("ack"))["ref"] == "s"
    page = await http.get("/api/rooms/lobby/messages", headers=_auth(again.token))
    assert [m["text"] for m in page.json()["messages"]] == ["still here"]


async def test_expired_token_closes_its_connection_within_one_reaper_tick(tmp_path: Path) -> None:
    ttl = 2.0  # long enough to say hello on a loaded machine, short enough to wait for
    config = make_config(tmp_path, token_ttl=ttl)
    async with (
        running_server(config) as server,
        httpx.AsyncClient(base_url=server.http, timeout=STEP) as http,
    ):
        issued_after = trio.current_time()
        alice = await register(http)
        issued_before = trio.current_time()
        async with open_websocket(server.ws) as ws:
            peer = Peer(ws)
            await peer.send(type="hello", token=alice.token)
            await peer.expect("welcome")
            await _closed_with(ws, CloseCode.UNAUTHENTICATED, "token expired")
            closed_at = trio.current_time()
        # Not before the token expired (a little slack for the wall clock vs trio's clock), and
        # within one reaper tick after (plus slack for a loaded machine).
        assert closed_at >= issued_after + ttl - 0.05
        assert closed_at <= issued_before + ttl + REAPER_TICK + 1.0


# The index on its own: a connection still saying hello is closed too --------------------------


@pytest.fixture
async def flusher() -> AsyncIterator[Flusher]:
    flusher = Flusher()
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        yield flusher
        nursery.cancel_scope.cancel()


@contextlib.contextmanager
def _connection(flusher: Flusher, token_hash: str) -> Iterator[ChatConnection]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        conn = chat_connection(ours, flusher, 1 << 20)
        conn.token_hash = token_hash
        yield conn


async def test_revoking_a_token_closes_its_connections_even_mid_hello(flusher: Flusher) -> None:
    index = TokenIndex()
    with (
        _connection(flusher, "t1") as hello,
        _connection(flusher, "t1") as open_,
        _connection(flusher, "t2") as other,
    ):
        open_.set_state(ConnState.OPEN)
        other.set_state(ConnState.OPEN)
        for conn in (hello, open_, other):
            index.track(conn)
        # `hello` is tracked before its token lookup: a logout during that lookup must find it.
        index.revoke("t1")
        for conn in (hello, open_):
            assert conn.state is ConnState.CLOSING
            assert (conn.close_code, conn.close_reason) == (
                CloseCode.UNAUTHENTICATED,
                "token revoked",
            )
        assert other.state is ConnState.OPEN
        index.untrack(other)
        index.revoke("t2")  # untracked: not closed
        assert other.state is ConnState.OPEN

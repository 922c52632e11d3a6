"""The Python client library's edits, deletes and read state against a real server (issue #15):
round trips, live delivery to another client, resume and idempotent re-send across a dropped
connection (the TCP relay of test_client breaks it on demand), and unread counts."""

from __future__ import annotations

import httpx
import pytest
import trio

from client import Disconnected, RequestError, UnreadCounter
from protocol import Ack, Deleted, Edited, Message, RoomUnread, Unread, Welcome

from ..conftest import RunningServer
from .test_client import chat, next_of, proxy_to, texts, users_in_room


async def test_edit_and_delete_round_trip_and_reach_another_client_live(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with chat(server, alice) as a, chat(server, bob) as b:
        sent = await a.send("lobby", "helo")
        edit = await a.edit("lobby", sent.id, "hello", client_id="e-1")
        assert (edit.id, edit.seq, edit.client_id, edit.duplicate) == (sent.id, 2, "e-1", False)
        edited = await next_of(b.events(), Edited)
        assert (edited.id, edited.seq, edited.text) == (sent.id, 2, "hello")
        gone = await a.delete("lobby", sent.id)
        assert (gone.id, gone.seq) == (sent.id, 3)
        deleted = await next_of(b.events(), Deleted)
        assert (deleted.id, deleted.seq, deleted.client_id) == (sent.id, 3, gone.client_id)
        assert b.last_seq == {"lobby": 3}  # edits and deletes move the resume cursor too

        [tombstone] = (await b.history("lobby")).messages
        assert (tombstone.id, tombstone.deleted, tombstone.text) == (sent.id, True, "")
        with pytest.raises(RequestError, match="message_deleted"):
            await a.edit("lobby", sent.id, "too late")
        mine = await a.send("lobby", "alice's")
        with pytest.raises(RequestError, match="not_author"):
            await b.delete("lobby", mine.id)  # a member deletes only their own
        theirs = await b.send("lobby", "bob's")
        with pytest.raises(RequestError, match="not_author"):
            await a.edit("lobby", theirs.id, "owners edit nobody's text")
        assert (await a.delete("lobby", theirs.id)).id == theirs.id  # the owner may delete it
        with pytest.raises(RequestError, match="no_such_message"):
            await a.edit("lobby", mine.id + 100, "nothing there")


async def test_resume_after_a_reconnect_delivers_an_edit_made_meanwhile(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with (
        proxy_to(server.port) as proxy,
        chat(server, alice) as a,
        chat(f"http://127.0.0.1:{proxy.port}", bob) as b,
    ):
        events = b.events()
        sent = await a.send("lobby", "first draft")
        assert await texts(events, 1) == [(1, "first draft")]
        proxy.close()
        await next_of(events, Disconnected)
        await a.edit("lobby", sent.id, "second draft")
        proxy.reopen()
        assert (await next_of(events, Welcome)).user == bob.name
        edited = await next_of(events, Edited)
        assert (edited.id, edited.seq, edited.text) == (sent.id, 2, "second draft")
        await a.send("lobby", "after")
        assert await texts(events, 1) == [(3, "after")]
        assert (b.connections, b.dropped_duplicates, b.last_seq) == (2, 0, {"lobby": 3})


async def test_an_edit_and_a_delete_whose_acks_were_lost_are_resent_and_stored_once(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with (
        proxy_to(server.port) as proxy,
        chat(server, bob) as b,
        chat(f"http://127.0.0.1:{proxy.port}", alice) as a,
    ):
        sent = await a.send("lobby", "typo")
        bobs = b.events()
        await next_of(bobs, Message)

        async def make(change: str, acks: list[Ack]) -> None:
            if change == "edit":
                acks.append(await a.edit("lobby", sent.id, "fixed", client_id="c-e"))
            else:
                acks.append(await a.delete("lobby", sent.id, client_id="c-d"))

        for change in ("edit", "delete"):
            proxy.mute = True  # alice's frames reach the server; its answers are lost
            acks: list[Ack] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(make, change, acks)
                stored = await next_of(bobs, Edited if change == "edit" else Deleted)
                assert not acks  # stored and delivered, but alice has no ack
                proxy.mute = False
                proxy.cut()
            [ack] = acks
            assert (ack.id, ack.seq, ack.duplicate) == (sent.id, stored.seq, True)
        # Nothing was stored twice: the next entry takes seq 4 (message, edit, delete).
        assert (await a.send("lobby", "next")).seq == 4
        assert await texts(bobs, 1) == [(4, "next")]
        assert a.connections == 3


async def test_unread_counts_follow_messages_reads_and_deletes_on_two_clients_of_one_user(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with chat(server, alice) as a:
        await a.send("lobby", "while bob was away")
        async with chat(server, bob) as phone, chat(server, bob) as laptop:
            assert phone.unread == laptop.unread == {"lobby": 1}  # from welcome.unread
            await a.send("lobby", "one")
            await a.send("lobby", "two")
            await phone.send("lobby", "bob's own")
            for client in (phone, laptop):
                got = await texts(client.events(), 3)
                assert got == [(2, "one"), (3, "two"), (4, "bob's own")]
                assert client.unread == {"lobby": 3}  # 1 + 2: bob's own is never unread
            state = await phone.mark_read("lobby", 2)
            assert (state.read_seq, state.last_seq, state.count) == (2, 4, 1)
            assert state.ref is not None  # the answer to phone's read
            moved = await next_of(laptop.events(), Unread)
            assert (moved.read_seq, moved.count, moved.ref) == (2, 1, None)
            assert phone.unread == laptop.unread == {"lobby": 1}
            assert laptop.read_state["lobby"] == RoomUnread(2, 4, 1)
            # A deleted message is no longer unread.
            last = await a.send("lobby", "soon deleted")
            await next_of(laptop.events(), Message)
            assert laptop.unread == {"lobby": 2}
            await a.delete("lobby", last.id)
            await next_of(laptop.events(), Deleted)
            assert laptop.unread == {"lobby": 1}


def test_unread_counter_keeps_the_newer_state_whatever_order_they_arrive_in() -> None:
    counter = UnreadCounter("bob")
    counter.welcome(Welcome(user="bob", protocol=1, server_id="s", rooms=["lobby"]))
    assert counter.counts() == {"lobby": 0}

    def message(seq: int, user: str = "alice") -> Message:
        return Message(room="lobby", id=100 + seq, seq=seq, user=user, text="t", ts=0)

    for seq in range(1, 6):
        counter.message(message(seq, "bob" if seq == 3 else "alice"))
    assert counter.count("lobby") == 4  # bob's own is not counted
    # Two moves made on different nodes arrive newest first: the older one changes nothing.
    assert counter.unread(Unread(room="lobby", read_seq=4, last_seq=5, count=1))
    assert not counter.unread(Unread(room="lobby", read_seq=2, last_seq=5, count=3))
    assert counter.count("lobby") == 1
    counter.message(message(6))
    counter.message(message(4))  # at or below the state: counted by the server already
    assert counter.count("lobby") == 2
    counter.deleted(Deleted(room="lobby", seq=7, id=106))
    assert counter.count("lobby") == 1
    counter.joined("dev", last_seq=9)
    counter.message(Message(room="dev", id=500, seq=10, user="carol", text="t", ts=0))
    assert counter.counts() == {"lobby": 1, "dev": 1}
    counter.left("dev")
    assert counter.counts() == {"lobby": 1}


async def test_mark_read_of_a_room_one_is_not_in_is_refused(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, _ = await users_in_room(http, "lobby")
    async with chat(server, alice) as a:
        with pytest.raises(RequestError, match="not_member"):
            await a.mark_read("elsewhere", 1)
        state = await a.mark_read("lobby", 10**6)  # clamped to the last seq, 0 here
        assert (state.read_seq, state.last_seq, state.count) == (0, 0, 0)

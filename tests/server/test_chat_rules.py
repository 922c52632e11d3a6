"""The chat rules on the socket-free connection state: session hello and send, resume with
hold and release, the rate limit, membership on a user's other connections, and the reaper.

The rules run for real (ChatSession, RoomHub, MembershipSync, Reaper, ChatConnection and its
OutboundBuffer); their store, writer and flusher are fakes (tests/server/chat_fakes.py). The
end-to-end tests of the same rules over real sockets are in tests/e2e.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from protocol import CloseCode, Hello, Join, Leave, Send, encode
from server.chat.connection import ChatConnection, ConnState
from server.chat.reaper import Reaper
from server.chat.registry import ConnectionRegistry
from server.chat.session import ChatSession
from storage import User

from .chat_fakes import Chat, message_payload, received


@pytest.fixture
def chat(tmp_path: Path) -> Chat:
    chat = Chat(tmp_path, rate_per_second=1.0, rate_burst=2.0)
    chat.store.tokens["t-ann"] = User(1, "ann")
    chat.store.members["r"] = {1}
    return chat


async def _hello(chat: Chat, **hello: object) -> tuple[ChatConnection, ChatSession]:
    conn, session = chat.connect()
    await session.handle(Hello(token="t-ann", ref="h", **hello))  # type: ignore[arg-type]
    return conn, session


def _messages(events: list[dict[str, object]]) -> list[object]:
    return [e["seq"] for e in events if e["type"] == "message"]


async def test_hello_with_a_good_token_welcomes_and_subscribes_to_the_users_rooms(
    chat: Chat,
) -> None:
    conn, _ = await _hello(chat)
    assert conn.state is ConnState.OPEN and (conn.user_id, conn.user_name) == (1, "ann")
    [welcome] = received(conn)
    assert (welcome["type"], welcome["rooms"], welcome["ref"]) == ("welcome", ["r"], "h")
    assert conn.rooms == {"r"}
    chat.bus.publish_message("r", 1, message_payload(chat.store, "r", 1))
    assert _messages(received(conn)) == [1]


async def test_hello_with_a_bad_token_is_refused_and_closed_with_4001(chat: Chat) -> None:
    conn, session = chat.connect()
    await session.handle(Hello(token="wrong", ref="h"))
    events = received(conn)
    assert events[0]["type"] == "error" and events[0]["code"] == "bad_token"
    assert events[1:] == [{"close": CloseCode.UNAUTHENTICATED}]
    assert conn.state is ConnState.CLOSING and conn.close_code == CloseCode.UNAUTHENTICATED
    assert chat.stopped == [conn] and not conn.rooms
    conn.enqueue(b"late")  # nothing is queued after the close frame
    assert received(conn) == []


async def test_send_to_a_room_the_user_is_not_in_is_refused(chat: Chat) -> None:
    chat.store.members["other"] = set()
    conn, session = await _hello(chat)
    received(conn)
    await session.handle(Send(room="other", text="hi", ref="s"))
    [error] = received(conn)
    assert (error["type"], error["code"], error["ref"]) == ("error", "not_member", "s")
    assert chat.writer.submitted == []


async def test_an_accepted_send_is_submitted_to_the_writer_with_its_sender(chat: Chat) -> None:
    conn, session = await _hello(chat)
    received(conn)
    await session.handle(Send(room="r", text="hi", client_id="c1", ref="s"))
    [item] = chat.writer.submitted
    assert (item.message.room, item.message.text, item.message.user_id) == ("r", "hi", 1)
    assert (item.message.client_id, item.sender, item.ref) == ("c1", conn, "s")
    assert received(conn) == []  # the ack is the writer's, after the commit
    session.last_read = True  # the reader says nothing more was read: a lone send
    await session.handle(Send(room="r", text="again", client_id="c2", ref="t"))
    assert chat.writer.lasts == [False, True]


async def test_sends_over_the_burst_are_rate_limited_until_the_bucket_refills(
    chat: Chat, autojump_clock: trio.testing.MockClock
) -> None:
    conn, session = await _hello(chat)
    received(conn)
    for n in range(3):  # burst 2
        await session.handle(Send(room="r", text=f"m{n}", ref=f"s{n}"))
    assert [i.message.text for i in chat.writer.submitted] == ["m0", "m1"]
    [error] = received(conn)
    assert (error["code"], error["ref"]) == ("rate_limited", "s2")
    assert chat.services.metrics.rate_limited == 1
    await trio.sleep(0.9)  # 1 token per second: not yet
    await session.handle(Send(room="r", text="early", ref="s3"))
    assert received(conn)[0]["code"] == "rate_limited"
    await trio.sleep(0.2)
    await session.handle(Send(room="r", text="later", ref="s4"))
    assert chat.writer.submitted[-1].message.text == "later" and received(conn) == []


async def test_resume_replays_missed_messages_in_order_then_releases_held_live_ones(
    chat: Chat,
) -> None:
    for seq in (1, 2, 3):
        chat.store.add_message("r", seq)

    def commits_during_the_replay() -> None:
        # Live, while the replay reads: seq 3 again (the replay has it too), a typing event,
        # and seq 4, committed after the resume read last_seq.
        chat.bus.publish_message("r", 3, encode(chat.store.messages["r"][2]))
        chat.bus.publish_typing("r", b'{"type":"typing","room":"r","user":"bob"}', 0)
        chat.bus.publish_message("r", 4, message_payload(chat.store, "r", 4))

    chat.store.on_messages_after = commits_during_the_replay
    conn, _ = await _hello(chat, resume={"r": 1})
    events = received(conn)
    assert events[0]["type"] == "welcome"
    assert _messages(events) == [2, 3, 4]  # in order, none twice, none missing
    assert [e["type"] for e in events].count("typing") == 1
    chat.bus.publish_message("r", 5, message_payload(chat.store, "r", 5))
    assert _messages(received(conn)) == [5]  # live again


async def test_resume_that_claims_more_than_exists_still_gets_new_messages(chat: Chat) -> None:
    chat.store.add_message("r", 1)
    conn, _ = await _hello(chat, resume={"r": 9})
    assert _messages(received(conn)) == []
    chat.bus.publish_message("r", 2, message_payload(chat.store, "r", 2))
    assert _messages(received(conn)) == [2]


async def test_a_join_and_a_leave_reach_the_users_other_connections(chat: Chat) -> None:
    chat.store.members["new"] = set()
    async with trio.open_nursery() as nursery:
        await nursery.start(chat.memberships.run)
        here, session = await _hello(chat)
        other, _ = await _hello(chat)
        received(here), received(other)
        await session.handle(Join(room="new", ref="j"))
        await trio.testing.wait_all_tasks_blocked()
        [joined] = received(here)
        assert (joined["type"], joined["room"], joined["ref"]) == ("joined", "new", "j")
        [told] = received(other)
        assert (told["type"], told["room"], told.get("ref")) == ("joined", "new", None)
        assert "new" in other.rooms
        chat.bus.publish_message("new", 1, message_payload(chat.store, "new", 1))
        assert _messages(received(other)) == [1] == _messages(received(here))
        await session.handle(Leave(room="new", ref="l"))
        assert [e["type"] for e in received(here)] == ["left"]
        [left] = received(other)
        assert (left["type"], left["room"]) == ("left", "new")
        assert "new" not in other.rooms and "new" not in here.rooms
        nursery.cancel_scope.cancel()


async def test_the_reaper_closes_a_connection_that_never_says_hello(
    chat: Chat, autojump_clock: trio.testing.MockClock
) -> None:
    registry = ConnectionRegistry()
    conn, _ = chat.connect()
    registry.add(conn)
    timeout = chat.config.timeouts.hello_timeout
    async with trio.open_nursery() as nursery:
        await nursery.start(Reaper(registry, chat.config).run)
        await trio.sleep(timeout * 0.7)
        assert conn.state is ConnState.HELLO
        await trio.sleep(timeout * 0.6)  # past the timeout by more than one tick
        assert conn.state is ConnState.CLOSING and conn.close_code == CloseCode.UNAUTHENTICATED
        assert received(conn) == [{"close": CloseCode.UNAUTHENTICATED}]
        nursery.cancel_scope.cancel()


async def test_the_reaper_pings_and_closes_a_connection_that_does_not_answer(
    chat: Chat, autojump_clock: trio.testing.MockClock
) -> None:
    registry = ConnectionRegistry()
    conn, _ = await _hello(chat)
    answering, _ = await _hello(chat)
    received(conn), received(answering)
    registry.add(conn)
    registry.add(answering)
    timeouts = chat.config.timeouts
    async with trio.open_nursery() as nursery:
        await nursery.start(Reaper(registry, chat.config).run)
        await trio.sleep(timeouts.heartbeat_interval + 1.5)
        assert received(conn) == [{"ping": "hb"}] and conn.ping_sent_at is not None
        assert received(answering) == [{"ping": "hb"}]
        answering.ping_sent_at = None  # its pong (what the reader does on one)
        await trio.sleep(timeouts.heartbeat_deadline)
        assert conn.state is ConnState.CLOSING and conn.close_code == CloseCode.STALE
        assert received(conn) == [{"close": CloseCode.STALE}]
        assert answering.state is ConnState.OPEN
        nursery.cancel_scope.cancel()

"""The terminal client's edit, delete and unread counts (issue #15), driven as a person would:
keys typed into a real process on a pseudo-terminal, its screen read back, another client on
the other end."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from client._shown import ShownMessage, ShownMessages
from protocol import Deleted, Edited, Message, Unread

from ..conftest import STEP, RunningServer, create_room, join_room
from .test_client import chat, next_of, users_in_room
from .test_terminal import terminal


async def test_terminal_edits_and_deletes_by_line_number_or_last_and_shows_others_changes(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with terminal(server.http, alice) as term, chat(server, bob) as b:
        await term.expect("[lobby]> ")
        bobs = await b.send("lobby", "bob was here")
        await term.expect(f"#1 [lobby] {bob.name}: bob was here")
        await term.type("my typo\r")
        await term.expect(f"#2 [lobby] {alice.name}: my typo")
        assert (await next_of(b.events(), Message)).id == bobs.id  # bob's own, echoed
        mine = await next_of(b.events(), Message)

        await term.type("/edit last my   fixed text\r")  # the rest of the line, as typed
        edited = await next_of(b.events(), Edited)
        assert (edited.id, edited.text) == (mine.id, "my   fixed text")
        await term.expect(f"* #2 [lobby] {alice.name}: my   fixed text (edited)")

        await b.edit("lobby", bobs.id, "bob was here, twice")
        await term.expect(f"* #1 [lobby] {bob.name}: bob was here, twice (edited)")
        await term.type("/edit 1 not mine\r")
        await term.expect("! not_author")
        await term.type("/delete #2\r")
        assert (await next_of(b.events(), Deleted)).id == mine.id
        await term.expect(f"* #2 [lobby] {alice.name}: (deleted)")
        await b.delete("lobby", bobs.id)
        await term.expect(f"* #1 [lobby] {bob.name}: (deleted)")

        await term.type("/history 5\r")  # tombstones keep their numbers
        listing = await term.expect("--- end of history ---")
        assert f"#1 [lobby] {bob.name}: (deleted)" in listing
        assert f"#2 [lobby] {alice.name}: (deleted)" in listing
        await term.type("/delete 99\r")
        await term.expect("! no such line: 99")
        await term.type("/edit 1\r")
        await term.expect("! usage: /edit N new text")
        await term.type("/help\r")
        await term.expect('"last": your latest one in this room')
        await term.type("/quit\r")
        with trio.fail_after(STEP):
            assert await term.process.wait() == 0


async def test_terminal_shows_unread_counts_and_marks_what_the_user_views_read(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    await create_room(http, alice, "dev")
    await join_room(http, bob, "dev")
    async with chat(server, bob) as b:
        await b.send("lobby", "before alice came")
        async with (
            chat(server, alice) as phone,
            terminal(server.http, alice, "--room", "dev") as term,
        ):
            await term.expect("lobby (1 unread)")  # in the greeting
            await term.expect("(unread: lobby 1) [dev]> ")

            # A message in another room than the current one stays unread: the prompt says so.
            await b.send("lobby", "in lobby")
            await term.expect(f"[lobby] {bob.name}: in lobby")
            await term.expect("(unread: lobby 2) [dev]> ")
            # One in the current room is seen as it is shown: its cursor moves there.
            dev = await b.send("dev", "in dev")
            await term.expect(f"[dev] {bob.name}: in dev")
            read = await next_of(phone.events(), Unread)
            assert (read.room, read.read_seq, read.count) == ("dev", dev.seq, 0)
            await term.type("/rooms\r")
            await term.expect(f"  {'lobby':<24} {'joined':<11} 2 messages, 2 unread")

            # Switching to a room reads it, and says how much was unread there.
            await term.type("/switch lobby\r")
            await term.expect("* 2 unread in lobby: /history 2 shows them")
            read = await next_of(phone.events(), Unread)
            assert (read.room, read.read_seq, read.count) == ("lobby", 2, 0)
            assert phone.unread == {"lobby": 0, "dev": 0}
            # Read on another session: the terminal's counts follow.
            await b.send("dev", "again in dev")
            await term.expect("(unread: dev 1) [lobby]> ")
            await phone.mark_read("dev", 10**6)
            await term.expect("\x1b[K[lobby]> ")  # the prompt redrawn without unread rooms
            await term.type("/rooms\r")
            await term.expect("/rooms")
            listing = await term.expect("* lobby")
            assert "unread" not in listing and " dev " in listing
            await term.type("/quit\r")
            with trio.fail_after(STEP):
                assert await term.process.wait() == 0


def test_shown_messages_keep_their_numbers_and_last_is_ones_own_latest_in_the_room() -> None:
    shown = ShownMessages()

    def message(id: int, user: str, room: str = "lobby", **more: Any) -> Message:
        fields: dict[str, Any] = {"text": f"m{id}", "ts": 0, **more}
        return Message(room=room, id=id, seq=id, user=user, **fields)

    assert shown.line(message(10, "bob"), "alice") == "#1 [lobby] bob: m10"
    assert shown.line(message(11, "alice"), "alice") == "#2 [lobby] alice: m11"
    assert shown.line(message(12, "alice", "dev"), "alice") == "#3 [dev] alice: m12"
    # Shown again by /history, as it is now: the same number.
    again = message(10, "bob", text="", deleted=True)
    assert shown.line(again, "alice") == "#1 [lobby] bob: (deleted)"
    assert shown.line(message(11, "alice", edited_at=5), "alice").endswith("m11 (edited)")
    assert [shown.find(w, "lobby") for w in ("1", "#2", "last")] == [
        ShownMessage(1, "lobby", 10, "bob"),
        ShownMessage(2, "lobby", 11, "alice"),
        ShownMessage(2, "lobby", 11, "alice"),
    ]
    assert shown.find("last", "dev") == ShownMessage(3, "dev", 12, "alice")
    assert shown.find("last", "garden") is None and shown.find("7", "lobby") is None
    assert shown.find("x", "lobby") is None
    # A change to a message never shown here says which room and id.
    unseen = Edited(room="lobby", seq=20, id=99, text="new\x1b[2J", edited_at=1)
    assert shown.change_line(unseen) == (
        "* [lobby] a message not shown here (id 99): new^[[2J (edited)"
    )

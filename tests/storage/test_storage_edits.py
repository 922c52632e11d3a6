"""The store contract for edits and deletes (issue #15), on every backend of the contract suite
(its fixtures): an edit or delete is a room entry with its own seq, applied to its message in the
same transaction; history shows the message as it is now, resume (`messages_after`) every entry."""

from __future__ import annotations

import pytest

from protocol import Deleted, Edited, Message
from storage import KIND_DELETE, KIND_EDIT, NewMessage, Store, User

from .test_storage import alice, bob, database_url, make_store, msg, store  # noqa: F401

pytestmark = pytest.mark.usefixtures("database_url")


def edit(room: str, user: User, target: int, text: str, client_id: str | None = None) -> NewMessage:
    return NewMessage(room, user.id, user.name, text, client_id, KIND_EDIT, target)


def delete(room: str, user: User, target: int, client_id: str | None = None) -> NewMessage:
    return NewMessage(room, user.id, user.name, "", client_id, KIND_DELETE, target)


async def _sent(store: Store, user: User, *texts: str) -> list[Message]:  # noqa: F811
    await store.create_room("r", user.id)
    results = await store.append_batch([msg("r", user, text) for text in texts])
    sent = [r.message for r in results]
    assert all(type(m) is Message for m in sent)
    return sent  # type: ignore[return-value]


async def test_an_edit_takes_its_own_seq_and_history_shows_the_current_text(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
) -> None:
    first, second = await _sent(store, alice, "helo", "world")
    [result] = await store.append_batch([edit("r", alice, first.id, "hello", "e1")])
    edited = result.message
    assert isinstance(edited, Edited)
    assert (edited.room, edited.seq, edited.id, edited.text) == ("r", 3, first.id, "hello")
    assert edited.client_id == "e1" and not result.duplicate
    assert await store.last_seq("r") == 3
    page, has_more = await store.history("r", None, 10)
    assert [(m.seq, m.text, m.edited_at) for m in page] == [
        (1, "hello", edited.edited_at),
        (2, "world", None),
    ]
    assert not has_more
    assert await store.messages_after("r", 2, 10) == [edited]
    current = await store.message("r", first.id)
    assert current is not None and current.text == "hello" and current.edited_at is not None
    assert second == await store.message("r", second.id)


async def test_a_delete_leaves_a_tombstone_and_erases_the_edits_texts(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
) -> None:
    [first] = await _sent(store, alice, "secret")
    await store.append_batch([edit("r", alice, first.id, "still secret")])
    [result] = await store.append_batch([delete("r", alice, first.id, "d1")])
    assert result.message == Deleted(room="r", seq=3, id=first.id, client_id="d1")
    page, _ = await store.history("r", None, 10)
    assert [(m.id, m.text, m.deleted) for m in page] == [(first.id, "", True)]
    replay = await store.messages_after("r", 0, 10)
    assert [type(e) for e in replay] == [Message, Edited, Deleted]
    assert all(getattr(e, "text", "") == "" for e in replay)  # nothing of the text survives
    tombstone = await store.message("r", first.id)
    assert tombstone is not None and tombstone.deleted and tombstone.text == ""


async def test_a_resent_edit_or_delete_returns_the_original_and_stores_nothing(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
) -> None:
    first, second = await _sent(store, alice, "a", "b")
    [edited] = await store.append_batch([edit("r", alice, first.id, "a2", "e1")])
    again = await store.append_batch(
        [edit("r", alice, first.id, "a3", "e1"), delete("r", alice, second.id, "d1")]
    )
    [deleted] = await store.append_batch([delete("r", alice, second.id, "d1")])
    assert again[0].duplicate and again[0].message == edited.message
    assert not again[1].duplicate and deleted.duplicate
    assert deleted.message == again[1].message
    assert await store.last_seq("r") == 4
    current = await store.message("r", first.id)
    assert current is not None and current.text == "a2"


async def test_an_edit_that_follows_a_delete_in_one_batch_changes_nothing(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
) -> None:
    [first] = await _sent(store, alice, "a")
    await store.append_batch([delete("r", alice, first.id), edit("r", alice, first.id, "back")])
    tombstone = await store.message("r", first.id)
    assert tombstone is not None and tombstone.deleted and tombstone.text == ""
    replay = await store.messages_after("r", 1, 10)
    assert [type(e) for e in replay] == [Deleted, Edited]
    assert isinstance(replay[1], Edited) and replay[1].text == ""


async def test_message_finds_only_a_message_of_that_room(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
    bob: User,  # noqa: F811
) -> None:
    [first] = await _sent(store, alice, "a")
    await store.create_room("other", bob.id)
    await store.append_batch([edit("r", alice, first.id, "a2")])
    assert await store.message("other", first.id) is None
    assert await store.message("r", first.id + 1) is None  # the edit entry is not a message
    assert await store.message("r", 10**12) is None


async def test_history_pages_count_messages_not_edit_entries(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
) -> None:
    sent = await _sent(store, alice, "1", "2", "3")
    await store.append_batch([edit("r", alice, m.id, m.text + "!") for m in sent])
    page, has_more = await store.history("r", None, 2)
    assert [m.text for m in page] == ["2!", "3!"] and has_more
    page, has_more = await store.history("r", page[0].seq, 2)
    assert [m.text for m in page] == ["1!"] and not has_more


async def test_unread_count_counts_messages_not_edits_deletes_or_deleted_messages(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
    bob: User,  # noqa: F811
) -> None:
    first, second, _third = await _sent(store, bob, "one", "two", "three")  # seqs 1..3
    await store.append_batch([edit("r", bob, first.id, "one!"), delete("r", bob, second.id)])
    assert await store.last_seq("r") == 5  # the edit and the delete took seqs 4 and 5
    # Left: "one!" (edited, still a message) and "three"; "two" is deleted; seqs 4, 5 are not
    # messages.
    assert await store.unread_count("r", 0, 5, alice.id) == 2
    assert await store.unread_count("r", 3, 5, alice.id) == 0

"""The store contract for full-text search (issue #15), on every backend of the contract suite
(SQLite FTS5, PostgreSQL's GIN index, sharded PostgreSQL): words ANDed, the last as a prefix,
newest first, keyset pages, only the rooms asked, an edited message by its current text only,
a deleted one never; any words `protocol.query_words` gives are matched, never parsed."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import Message, ProtocolError, query_words
from storage import KIND_DELETE, KIND_EDIT, NewMessage, Store, User
from storage.search import NO_CURSOR

from .test_storage import (  # noqa: F401
    DatabaseUrl,
    alice,
    bob,
    database_url,
    make_store,
    msg,
    open_test_store,
    store,
)

pytestmark = pytest.mark.usefixtures("database_url")


async def _send(store: Store, room: str, user: User, *texts: str) -> list[Message]:  # noqa: F811
    results = await store.append_batch([msg(room, user, text) for text in texts])
    sent = [r.message for r in results]
    assert all(type(m) is Message for m in sent)
    return sent  # type: ignore[return-value]


async def _texts(store: Store, rooms: list[str], query: str) -> list[str]:  # noqa: F811
    found, _ = await store.search(rooms, query_words(query), NO_CURSOR, 50)
    return [m.text for m in found]


async def test_search_ands_the_words_matches_the_last_as_a_prefix_newest_first(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
) -> None:
    await store.create_room("dev", alice.id)
    await _send(store, "dev", alice, "deploy failed on web1", "Deploy OK", "the deployment FAILED")
    assert await _texts(store, ["dev"], "deploy failed") == ["deploy failed on web1"]
    assert await _texts(store, ["dev"], "FAIL") == [
        "the deployment FAILED",
        "deploy failed on web1",
    ]
    assert await _texts(store, ["dev"], "deploy") == [
        "the deployment FAILED",
        "Deploy OK",
        "deploy failed on web1",
    ]
    assert await _texts(store, ["dev"], "fail deploy") == []  # a prefix on the last word only
    assert await _texts(store, ["dev"], "nothing") == []


async def test_search_covers_only_the_rooms_asked_and_skips_unknown_ones(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
    bob: User,  # noqa: F811
) -> None:
    for room in ("a", "b", "c"):
        await store.create_room(room, alice.id)
    await _send(store, "a", alice, "hello from a")
    await _send(store, "b", bob, "hello from b")
    await _send(store, "c", alice, "hello from c")
    found, more = await store.search(["a", "c", "nowhere"], ("hello",), NO_CURSOR, 10)
    assert [(m.room, m.text, m.user) for m in found] == [
        ("c", "hello from c", "alice"),
        ("a", "hello from a", "alice"),
    ]
    assert not more
    assert await store.search([], ("hello",), NO_CURSOR, 10) == ([], False)
    assert await store.search(["nowhere"], ("hello",), NO_CURSOR, 10) == ([], False)


async def test_search_pages_by_keyset_without_repeats_while_messages_arrive(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
) -> None:
    for room in ("a", "b"):
        await store.create_room(room, alice.id)
    sent = [m for i in range(7) for m in await _send(store, "ab"[i % 2], alice, f"ping {i}")]
    pages: list[list[int]] = []
    before = NO_CURSOR
    while True:
        found, more = await store.search(["a", "b"], ("ping",), before, 3)
        pages.append([m.id for m in found])
        await _send(store, "a", alice, "ping late")  # newer: never on a later page
        if not more:
            break
        before = found[-1].id
    assert pages == [
        [m.id for m in sent[6:3:-1]],
        [m.id for m in sent[3:0:-1]],
        [sent[0].id],
    ]


async def test_an_edited_message_is_found_by_its_current_text_and_a_deleted_one_never(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
) -> None:
    await store.create_room("r", alice.id)
    first, second, third = await _send(store, "r", alice, "helo wrld", "secret plans", "keep me")
    await store.append_batch(
        [
            NewMessage("r", alice.id, alice.name, "hello world", None, KIND_EDIT, first.id),
            NewMessage("r", alice.id, alice.name, "", None, KIND_DELETE, second.id),
            NewMessage("r", alice.id, alice.name, "kept, edited", None, KIND_EDIT, third.id),
        ]
    )
    assert await _texts(store, ["r"], "helo") == []
    found, _ = await store.search(["r"], ("world",), NO_CURSOR, 10)
    assert [(m.id, m.seq, m.text) for m in found] == [(first.id, 1, "hello world")]
    assert found[0].edited_at is not None  # as history shows it
    assert await _texts(store, ["r"], "secret") == []
    assert await _texts(store, ["r"], "plans") == []
    # An edit of a deleted message changes nothing, so it is not found either.
    await store.append_batch(
        [NewMessage("r", alice.id, alice.name, "secret again", None, KIND_EDIT, second.id)]
    )
    assert await _texts(store, ["r"], "secret") == []
    assert await _texts(store, ["r"], "kept") == ["kept, edited"]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    query=st.text(max_size=60)
    | st.sampled_from(['"a" OR b*', "a:* & !b", "NEAR(a b)", "'x'\\", 'ab"c', "x" * 201])
)
async def test_any_query_is_words_or_a_documented_refusal_never_syntax(
    database_url: DatabaseUrl,  # noqa: F811
    query: str,
) -> None:
    try:
        words = query_words(query)
    except ProtocolError as exc:
        assert exc.code in ("query_empty", "query_too_long")
        return
    tag = uuid.uuid4().hex[:8]
    async with open_test_store(database_url("fuzz")) as s:
        user = await s.create_user(f"u-{tag}", "pw")
        await s.create_room(f"r-{tag}", user.id)
        await s.append_batch([msg(f"r-{tag}", user, " ".join(words))])  # storable text
        found, _ = await s.search([f"r-{tag}"], words, NO_CURSOR, 5)
        assert all(m.room == f"r-{tag}" for m in found)

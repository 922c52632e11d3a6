"""Edit and delete end to end (issue #15): a real server, real sockets, a real SQLite file."""

from __future__ import annotations

from typing import Any

import httpx

from ..conftest import Account, Connect, Peer, create_room, join_room, register

SKIP = ("presence", "typing", "message", "edited", "deleted")


async def _sent(peer: Peer, room: str, text: str) -> dict[str, Any]:
    """Send `text` and return its ack."""
    await peer.send(type="send", room=room, text=text)
    return await peer.expect("ack", skip=SKIP)


async def _history(http: httpx.AsyncClient, user: Account, room: str) -> list[dict[str, Any]]:
    response = await http.get(
        f"/api/rooms/{room}/messages", headers={"Authorization": f"Bearer {user.token}"}
    )
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def test_an_edit_is_seen_live_acked_with_its_own_seq_and_shown_by_history(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = await register(http), await register(http)
    await create_room(http, alice, "ed")
    await join_room(http, bob, "ed")
    async with connect(alice) as a, connect(bob) as b:
        sent = await _sent(a, "ed", "helo")
        assert (await b.expect("message"))["text"] == "helo"
        await a.send(type="edit", room="ed", id=sent["id"], text="hello", client_id="e1", ref="e")
        ack = await a.expect("ack", skip=SKIP)
        assert (ack["id"], ack["seq"], ack["client_id"], ack["ref"]) == (sent["id"], 2, "e1", "e")
        edited = await b.expect("edited")
        assert (edited["id"], edited["seq"], edited["text"]) == (sent["id"], 2, "hello")
        assert edited["room"] == "ed" and edited["client_id"] == "e1"
        await b.send(type="history", room="ed", ref="h")
        page = await b.expect("history")
    [message] = page["messages"]
    assert (message["text"], message["edited_at"]) == ("hello", edited["edited_at"])
    assert await _history(http, bob, "ed") == page["messages"]


async def test_resume_after_missing_an_edit_and_a_delete_delivers_both_in_seq_order(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, carol = await register(http), await register(http)
    await create_room(http, alice, "rs")
    await join_room(http, carol, "rs")
    async with connect(alice) as a:
        first, second = await _sent(a, "rs", "one"), await _sent(a, "rs", "two")
        await a.send(type="edit", room="rs", id=first["id"], text="one!")
        await a.expect("ack", skip=SKIP)
        await a.send(type="delete", room="rs", id=second["id"])
        await a.expect("ack", skip=SKIP)
        async with connect(carol, resume={"rs": 2}) as c:
            edited, deleted = await c.expect("edited"), await c.expect("deleted")
            assert (edited["seq"], edited["id"], edited["text"]) == (3, first["id"], "one!")
            assert (deleted["seq"], deleted["id"]) == (4, second["id"])
            await _sent(a, "rs", "live")
            assert (await c.expect("message"))["seq"] == 5
    history = await _history(http, carol, "rs")
    assert [(m["text"], m.get("deleted", False)) for m in history] == [
        ("one!", False),
        ("", True),
        ("live", False),
    ]


async def test_a_delete_leaves_a_tombstone_with_no_text(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = await register(http), await register(http)
    await create_room(http, alice, "tomb")
    await join_room(http, bob, "tomb")
    async with connect(alice) as a, connect(bob) as b:
        sent = await _sent(a, "tomb", "oops: my password")
        await a.send(type="delete", room="tomb", id=sent["id"], ref="d")
        ack = await a.expect("ack", skip=SKIP)
        assert (ack["id"], ack["seq"], ack["ref"]) == (sent["id"], 2, "d")
        await b.expect("message")
        deleted = await b.expect("deleted")
        assert deleted == {"type": "deleted", "room": "tomb", "seq": 2, "id": sent["id"]}
    [tombstone] = await _history(http, bob, "tomb")
    assert tombstone["deleted"] is True and tombstone["text"] == ""
    assert "password" not in str(tombstone)


async def test_a_resent_edit_is_acked_as_a_duplicate_and_stored_once(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice = await register(http)
    await create_room(http, alice, "dup")
    async with connect(alice) as a:
        sent = await _sent(a, "dup", "v1")
        for text in ("v2", "v3"):  # the resend's text is ignored: the original stands
            await a.send(type="edit", room="dup", id=sent["id"], text=text, client_id="same")
        first = await a.expect("ack", skip=SKIP)
        again = await a.expect("ack", skip=SKIP)
        assert (first["seq"], first.get("duplicate", False)) == (2, False)
        assert (again["seq"], again["duplicate"]) == (2, True)
        await _sent(a, "dup", "next")  # seq 3: nothing was stored for the resend
    assert [m["text"] for m in await _history(http, alice, "dup")] == ["v2", "next"]


async def test_edits_and_deletes_are_refused_with_documented_codes(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob, eve = await register(http), await register(http), await register(http)
    await create_room(http, alice, "rules")
    await join_room(http, bob, "rules")
    async with connect(alice) as a, connect(bob) as b, connect(eve) as e:
        mine = await _sent(a, "rules", "alice's")
        await a.send(type="delete", room="rules", id=mine["id"])
        await a.expect("ack", skip=SKIP)
        kept = await _sent(a, "rules", "kept")
        cases = [
            (b, {"type": "edit", "id": kept["id"], "text": "bob's now"}, "not_author"),
            (b, {"type": "delete", "id": kept["id"]}, "not_author"),
            (a, {"type": "edit", "id": mine["id"], "text": "back"}, "message_deleted"),
            (a, {"type": "delete", "id": mine["id"]}, "message_deleted"),
            (a, {"type": "edit", "id": 10**9, "text": "x"}, "no_such_message"),
            (a, {"type": "edit", "id": mine["id"] + 1, "text": "x"}, "no_such_message"),
            (a, {"type": "edit", "id": kept["id"], "text": "a\u0000b"}, "text_invalid"),
            (a, {"type": "edit", "id": kept["id"], "text": " "}, "text_empty"),
            (e, {"type": "edit", "id": kept["id"], "text": "x"}, "not_member"),
        ]
        for peer, frame, code in cases:
            await peer.send(room="rules", ref=code, **frame)
            error = await peer.expect("error", skip=SKIP)
            assert (error["code"], error["ref"]) == (code, code), frame
    assert [m["text"] for m in await _history(http, alice, "rules")] == ["", "kept"]


async def test_http_patch_and_delete_change_a_message_and_subscribers_see_it(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = await register(http), await register(http)
    await create_room(http, alice, "web")
    await join_room(http, bob, "web")
    auth = {"Authorization": f"Bearer {alice.token}"}
    async with connect(alice) as a, connect(bob) as b:
        sent = await _sent(a, "web", "draft")
        url = f"/api/rooms/web/messages/{sent['id']}"
        patched = await http.patch(url, json={"text": "final", "client_id": "p1"}, headers=auth)
        assert patched.status_code == 200, patched.text
        assert patched.json() == {
            "room": "web",
            "id": sent["id"],
            "seq": 2,
            "client_id": "p1",
            "duplicate": False,
        }
        again = await http.patch(url, json={"text": "other", "client_id": "p1"}, headers=auth)
        assert again.json()["duplicate"] is True and again.json()["seq"] == 2
        await b.expect("message")
        assert (await b.expect("edited"))["text"] == "final"
        bobs = await http.patch(
            url, json={"text": "x"}, headers={"Authorization": f"Bearer {bob.token}"}
        )
        assert (bobs.status_code, bobs.json()["error"]["code"]) == (403, "not_author")
        bad = await http.patch(url, json={"text": "\u0000"}, headers=auth)
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "text_invalid")
        deleted = await http.delete(url, headers=auth)
        assert (deleted.status_code, deleted.json()["seq"]) == (200, 3)
        assert (await b.expect("deleted"))["id"] == sent["id"]
        gone = await http.delete(url, headers=auth)
        assert (gone.status_code, gone.json()["error"]["code"]) == (409, "message_deleted")
        missing = await http.delete("/api/rooms/web/messages/999999", headers=auth)
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "no_such_message")

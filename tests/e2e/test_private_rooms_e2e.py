"""Private rooms are invisible to non-members (issue #15): over HTTP and the WebSocket, every
answer about an existing private room to a non-member is, byte for byte, the answer about a
room that does not exist; `room_created` is never broadcast for one; and the room settings,
members and roles routes over HTTP."""

from __future__ import annotations

import json

import httpx
import pytest

from ..conftest import Account, Connect, create_room, join_room, register


def _auth(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.token}"}


_PATHS = [
    pytest.param("GET", "/api/rooms/{room}", None, id="info"),
    pytest.param("PATCH", "/api/rooms/{room}", {"topic": "x"}, id="update"),
    pytest.param("GET", "/api/rooms/{room}/members", None, id="members"),
    pytest.param("GET", "/api/rooms/{room}/messages", None, id="history"),
    pytest.param("POST", "/api/rooms/{room}/join", None, id="join"),
    pytest.param("POST", "/api/rooms/{room}/leave", None, id="leave"),
    pytest.param("PUT", "/api/rooms/{room}/read", {"seq": 1}, id="read"),
    pytest.param("POST", "/api/rooms/{room}/invite", {"user": "u"}, id="invite"),
    pytest.param("POST", "/api/rooms/{room}/kick", {"user": "u"}, id="kick"),
    pytest.param("POST", "/api/rooms/{room}/transfer", {"user": "u"}, id="transfer"),
    pytest.param("PUT", "/api/rooms/{room}/members/u", {"role": "admin"}, id="set-role"),
    pytest.param("POST", "/api/rooms/{room}/messages:batch", {"messages": []}, id="batch"),
    pytest.param("DELETE", "/api/rooms/{room}/messages/1", None, id="delete"),
    pytest.param("GET", "/api/search?q=hi&room={room}", None, id="search"),
]


@pytest.mark.parametrize(("method", "path", "body"), _PATHS)
async def test_http_answers_a_non_member_about_a_private_room_as_about_no_room(
    http: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    ann, eve = await register(http), await register(http)
    response = await http.post(
        "/api/rooms", json={"name": "hidden", "private": True}, headers=_auth(ann)
    )
    assert response.status_code == 201
    answers = []
    for room in ("hidden", "absent"):
        response = await http.request(method, path.format(room=room), json=body, headers=_auth(eve))
        answers.append((response.status_code, response.content.replace(room.encode(), b"R")))
    assert answers[0] == answers[1]
    assert answers[0][0] == 404 and b'"no_such_room"' in answers[0][1]


async def test_the_room_list_shows_public_rooms_and_only_my_private_ones(
    http: httpx.AsyncClient,
) -> None:
    ann, eve = await register(http), await register(http)
    await create_room(http, ann, "open")
    await http.post("/api/rooms", json={"name": "hidden", "private": True}, headers=_auth(ann))
    mine = (await http.get("/api/rooms", headers=_auth(ann))).json()["rooms"]
    assert [(r["name"], r["visibility"], r["role"]) for r in mine] == [
        ("hidden", "private", "owner"),
        ("open", "public", "owner"),
    ]
    theirs = (await http.get("/api/rooms", headers=_auth(eve))).json()["rooms"]
    assert [(r["name"], r["role"]) for r in theirs] == [("open", None)]


async def test_websocket_answers_a_non_member_about_a_private_room_as_about_no_room(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    ann, eve = await register(http), await register(http)
    async with connect(eve) as outsider:
        response = await http.post(
            "/api/rooms", json={"name": "hidden", "private": True}, headers=_auth(ann)
        )
        assert response.status_code == 201
        await create_room(http, ann, "open")  # announced: the private one never was
        assert (await outsider.expect("room_created"))["room"] == "open"
        frames = [
            {"type": "join"},
            {"type": "send", "text": "hi"},
            {"type": "history"},
            {"type": "read", "seq": 1},
            {"type": "typing"},
            {"type": "delete", "id": 1},
            {"type": "room_update", "topic": "x"},
            {"type": "invite", "user": eve.name},
            {"type": "kick", "user": eve.name},
            {"type": "set_role", "user": eve.name, "role": "admin"},
            {"type": "search", "query": "hi"},
        ]
        for frame in frames:
            answers = []
            for room in ("hidden", "absent"):
                await outsider.ws.send_message(json.dumps({**frame, "room": room, "ref": "r"}))
                answers.append((await outsider.ws.get_message()).replace(room, "R"))
            assert answers[0] == answers[1], frame


async def test_room_settings_members_and_roles_over_http(http: httpx.AsyncClient) -> None:
    ann, bob = await register(http), await register(http)
    await create_room(http, ann, "lobby")
    await join_room(http, bob, "lobby")
    response = await http.patch(
        "/api/rooms/lobby", json={"topic": "news", "slow_mode": 10}, headers=_auth(ann)
    )
    assert response.status_code == 200, response.text
    assert (response.json()["type"], response.json()["topic"]) == ("room_updated", "news")
    info = (await http.get("/api/rooms/lobby", headers=_auth(bob))).json()
    assert (info["topic"], info["slow_mode"], info["owner"], info["role"]) == (
        "news",
        10,
        ann.name,
        "member",
    )
    response = await http.patch("/api/rooms/lobby", json={"topic": "x" * 301}, headers=_auth(ann))
    assert response.status_code == 422
    response = await http.patch("/api/rooms/lobby", json={"slow_mode": 1}, headers=_auth(bob))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
    response = await http.put(
        f"/api/rooms/lobby/members/{bob.name}", json={"role": "admin"}, headers=_auth(ann)
    )
    assert (response.status_code, response.json()["role"]) == (200, "admin")
    response = await http.put(
        f"/api/rooms/lobby/members/{bob.name}", json={"role": "king"}, headers=_auth(ann)
    )
    assert (response.status_code, response.json()["error"]["code"]) == (422, "bad_role")
    response = await http.post("/api/rooms/lobby/leave", headers=_auth(ann))
    assert (response.status_code, response.json()["error"]["code"]) == (409, "owner_must_transfer")
    response = await http.post(
        "/api/rooms/lobby/transfer", json={"user": bob.name}, headers=_auth(ann)
    )
    assert (response.status_code, response.json()["change"]) == (200, "transferred")
    roles = (await http.get("/api/rooms/lobby/members", headers=_auth(ann))).json()["roles"]
    assert roles == {ann.name: "admin", bob.name: "owner"}
    response = await http.post("/api/rooms/lobby/kick", json={"user": bob.name}, headers=_auth(ann))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
    response = await http.post("/api/rooms/lobby/ban", json={"user": ann.name}, headers=_auth(bob))
    assert (response.status_code, response.json()["change"]) == (200, "banned")
    response = await http.post("/api/rooms/lobby/join", headers=_auth(ann))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "banned")
    response = await http.post("/api/rooms/lobby/kick", json={"user": "ghost"}, headers=_auth(bob))
    assert (response.status_code, response.json()["error"]["code"]) == (404, "no_such_user")


async def test_an_admin_deletes_anyones_message_over_http_and_slow_mode_bars_member_batches(
    http: httpx.AsyncClient,
) -> None:
    ann, bob = await register(http), await register(http)
    await create_room(http, ann, "lobby")
    await join_room(http, bob, "lobby")
    batch = {"messages": [{"text": "one"}]}
    response = await http.post("/api/rooms/lobby/messages:batch", json=batch, headers=_auth(bob))
    message_id = response.json()["results"][0]["id"]
    response = await http.delete(f"/api/rooms/lobby/messages/{message_id}", headers=_auth(ann))
    assert response.status_code == 200, response.text
    await http.patch("/api/rooms/lobby", json={"slow_mode": 30}, headers=_auth(ann))
    response = await http.post("/api/rooms/lobby/messages:batch", json=batch, headers=_auth(bob))
    assert (response.status_code, response.json()["error"]["code"]) == (429, "slow_mode")
    assert response.headers["Retry-After"] == "30"
    response = await http.post("/api/rooms/lobby/messages:batch", json=batch, headers=_auth(ann))
    assert response.status_code == 201

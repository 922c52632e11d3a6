"""Search end to end (issue #15): the WebSocket `search` request and GET /api/search through a
real server (SQLite): only the user's rooms, newest first, keyset pages, edits and deletes
applied, every bad input a documented error (never a 500)."""

from __future__ import annotations

import random
from typing import Any

import httpx

from ..conftest import Account, Connect, create_room, join_room, register


def _auth(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.token}"}


async def _post(http: httpx.AsyncClient, who: Account, room: str, *texts: str) -> list[int]:
    response = await http.post(
        f"/api/rooms/{room}/messages:batch",
        json={"messages": [{"text": text} for text in texts]},
        headers=_auth(who),
    )
    assert response.status_code == 201, response.text
    return [r["id"] for r in response.json()["results"]]


async def _search(http: httpx.AsyncClient, who: Account, **params: Any) -> httpx.Response:
    return await http.get("/api/search", params=params, headers=_auth(who))


async def test_ws_search_finds_the_users_rooms_only_newest_first_in_pages(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = await register(http), await register(http)
    await create_room(http, alice, "dev")
    await create_room(http, bob, "secret")
    await join_room(http, bob, "dev")
    ids = await _post(
        http, bob, "dev", "deploy failed", "lunch?", "Deploy failed again", "deployed"
    )
    await _post(http, bob, "secret", "deploy failed in secret")
    async with connect(alice) as peer:
        await peer.send(type="search", query="deploy fail", limit=1, ref="s1")
        first = await peer.expect("search_results")
        assert first["ref"] == "s1" and first["query"] == "deploy fail"
        [hit] = first["results"]
        assert (hit["room"], hit["id"], hit["seq"], hit["text"]) == (
            "dev",
            ids[2],
            3,
            "Deploy failed again",
        )
        assert hit["user"] == bob.name and isinstance(hit["ts"], int)
        assert isinstance(first["next"], str)
        await peer.send(type="search", query="deploy fail", before=first["next"], ref="s2")
        second = await peer.expect("search_results")
        assert [r["id"] for r in second["results"]] == [ids[0]]
        assert second["next"] is None
        await peer.send(type="search", query="deploy", room="dev", ref="s3")
        third = await peer.expect("search_results")
        assert [r["id"] for r in third["results"]] == [ids[3], ids[2], ids[0]]


async def test_ws_search_refusals_carry_their_codes(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = await register(http), await register(http)
    await create_room(http, bob, "theirs")
    cases = [
        ({"query": "x", "room": "theirs"}, "not_member"),
        ({"query": "x", "room": "nowhere"}, "no_such_room"),
        ({"query": "?!  ..."}, "query_empty"),
        ({"query": "a" * 201}, "query_too_long"),
        ({"query": "x", "before": "not-a-cursor"}, "bad_field"),
        ({"query": "x", "limit": 51}, "bad_field"),
        ({"query": "x", "limit": 0}, "bad_field"),
    ]
    async with connect(alice) as peer:
        for i, (fields, code) in enumerate(cases):
            await peer.send(type="search", ref=f"e{i}", **fields)
            error = await peer.expect("error")
            assert (error["code"], error["ref"]) == (code, f"e{i}"), fields


async def test_http_search_applies_edits_and_deletes_and_pages(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice = await register(http)
    await create_room(http, alice, "notes")
    ids = await _post(http, alice, "notes", "draft one", "draft two", "draft three")
    edited = await http.patch(
        f"/api/rooms/notes/messages/{ids[0]}", json={"text": "final one"}, headers=_auth(alice)
    )
    assert edited.status_code == 200, edited.text
    deleted = await http.delete(f"/api/rooms/notes/messages/{ids[1]}", headers=_auth(alice))
    assert deleted.status_code == 200, deleted.text
    found = await _search(http, alice, q="draft")
    assert found.status_code == 200
    assert found.json() == {"results": [found.json()["results"][0]], "next": None}
    assert found.json()["results"][0]["id"] == ids[2]
    final = (await _search(http, alice, q="fin", room="notes")).json()["results"]
    assert [(r["id"], r["text"]) for r in final] == [(ids[0], "final one")]
    assert final[0]["edited_at"] > 0
    page = (await _search(http, alice, q="one OR three", limit=1)).json()
    assert page == {"results": [], "next": None}  # OR is a word here, not an operator


async def test_http_search_refusals_are_json_errors(http: httpx.AsyncClient) -> None:
    alice, bob = await register(http), await register(http)
    await create_room(http, bob, "theirs")
    cases = [
        ({"q": "x", "room": "theirs"}, 403, "not_member"),
        ({"q": "x", "room": "nowhere"}, 404, "no_such_room"),
        ({"q": "x", "room": "Bad Name"}, 404, "no_such_room"),
        ({"q": "!!"}, 422, "query_empty"),
        ({"q": "a" * 201}, 422, "query_too_long"),
        ({"q": "x", "before": "bXg"}, 422, "bad_field"),
        ({"q": "x", "limit": "many"}, 422, "bad_field"),
        ({"room": "theirs"}, 422, "missing_field"),
        ({"q": "x", "page": "2"}, 422, "unknown_field"),
    ]
    for params, status, code in cases:
        response = await _search(http, alice, **params)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), params
    assert (await http.get("/api/search", params={"q": "x"})).status_code == 401


_TRICKY = ['"', "'", "*", "a*", '"a" OR b*', "a:* & !b", "NEAR(a b)", "\\", "\x00", "ß", "İ"]


async def test_http_search_answers_any_input_with_results_or_a_documented_error(
    http: httpx.AsyncClient,
) -> None:
    account = await register(http)
    await create_room(http, account, "fuzz")
    await _post(http, account, "fuzz", "a \"quoted\" AND b* NEAR(x y) 'c':* & !d")
    rng = random.Random(15)  # deterministic: the same inputs on every run
    alphabet = "ab \"'*:&|!()-^\\\x00\u00e9\u0301\u4e2d\U0001f600"
    queries = _TRICKY + ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(60)]
    queries.append("a" * 300)
    for i, query in enumerate(queries):
        params = {"q": query} if i % 3 else {"q": query, "before": query[:20]}
        response = await _search(http, account, **params)
        assert response.status_code in (200, 422), (query, response.text)
        if response.status_code == 422:
            code = response.json()["error"]["code"]
            assert code in ("query_empty", "query_too_long", "bad_field"), query
        else:
            assert set(response.json()) == {"results", "next"}

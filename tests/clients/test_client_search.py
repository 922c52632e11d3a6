"""`ChatClient.search` (issue #15): pages of results across the user's rooms, newest first,
followed with `next`; a refusal is a `RequestError` carrying the server's code."""

from __future__ import annotations

import httpx
import pytest

from client import RequestError

from ..conftest import RunningServer
from .test_client import chat, users_in_room


async def test_client_search_pages_newest_first_and_refusals_raise(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with chat(server, alice) as a, chat(server, bob) as b:
        acks = [await b.send("lobby", f"build {i} green") for i in range(3)]
        first = await a.search("build gre", limit=2)
        assert [m.id for m in first.results] == [acks[2].id, acks[1].id]
        assert first.next is not None and first.query == "build gre"
        second = await a.search("build gre", before=first.next, limit=2)
        assert [m.id for m in second.results] == [acks[0].id] and second.next is None
        only = await a.search("green", room="lobby")
        assert [m.text for m in only.results] == ["build 2 green", "build 1 green", "build 0 green"]
        with pytest.raises(RequestError, match="query_empty"):
            await a.search("...")
        with pytest.raises(RequestError, match="no_such_room"):
            await a.search("green", room="nowhere")

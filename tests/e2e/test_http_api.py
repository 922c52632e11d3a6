"""The HTTP API served for real: hypercorn on 127.0.0.1 port 0, a SQLite file in tmp_path, httpx."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio

import protocol
from server.http.api import HttpServices, create_http_app
from storage import Store, open_store

STEP = 10.0  # bound for one test on a loaded machine
MAX_TEXT = 100
MAX_BATCH = 50
PASSWORD = "correct horse"
_names = itertools.count()


@dataclass
class Api:
    """A running app, its store, and what the app told the server through its callbacks."""

    store: Store
    client: httpx.AsyncClient = field(init=False)
    published: list[list[protocol.Message]] = field(default_factory=list)
    membership_changes: list[tuple[str, int, bool]] = field(default_factory=list)
    not_ready: str | None = None
    readiness_error: Exception | None = None

    def publish(self, messages: Sequence[protocol.Message]) -> None:
        self.published.append(list(messages))

    async def membership_changed(self, room: str, user_id: int, member: bool) -> None:
        self.membership_changes.append((room, user_id, member))

    def readiness(self) -> str | None:
        if self.readiness_error is not None:
            raise self.readiness_error
        return self.not_ready

    async def register(self, name: str | None = None) -> User:
        name = name or f"user{next(_names)}"
        response = await self.client.post(
            "/api/register", json={"name": name, "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return User(body["user"]["id"], name, body["token"])

    async def create_room(self, owner: User, room: str) -> None:
        response = await self.client.post("/api/rooms", json={"name": room}, headers=owner.auth)
        assert response.status_code == 201, response.text

    async def import_batch(self, user: User, room: str, *items: dict[str, Any]) -> httpx.Response:
        return await self.client.post(
            f"/api/rooms/{room}/messages:batch", json={"messages": list(items)}, headers=user.auth
        )


@dataclass
class User:
    id: int
    name: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with open_store(tmp_path / "http.db", scrypt_n=2**10) as store:
        handle = Api(store)
        app = create_http_app(
            HttpServices(
                store=store,
                server_id="test-http",
                token_ttl=3600.0,
                max_text=MAX_TEXT,
                max_batch=MAX_BATCH,
                publish=handle.publish,
                membership_changed=handle.membership_changed,
                readiness=handle.readiness,
            )
        )
        config = hypercorn.config.Config()
        config.bind = ["127.0.0.1:0"]
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                partial(hypercorn.trio.serve, app, config, shutdown_trigger=stop.wait)
            )
            # Closed before the server stops, so hypercorn has no keep-alive connection to wait for.
            async with httpx.AsyncClient(base_url=binds[0], timeout=STEP) as handle.client:
                with trio.fail_after(STEP):
                    yield handle
            stop.set()


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    return error


# Accounts ---------------------------------------------------------------------------------


async def test_register_then_login_then_me(api: Api) -> None:
    response = await api.client.post("/api/register", json={"name": "ada", "password": PASSWORD})
    assert response.status_code == 201
    registered = response.json()
    assert registered["user"]["name"] == "ada"
    assert registered["expires_at"] > 0

    response = await api.client.post("/api/login", json={"name": "ada", "password": PASSWORD})
    assert response.status_code == 200
    login = response.json()
    assert login["user"] == registered["user"]
    assert login["token"] != registered["token"]
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"

    for token in (registered["token"], login["token"]):
        me = await api.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200
        # issue #15 added the profile to the user (none set yet; last_seen is written in batches)
        profile = {"display_name": None, "last_seen": None}
        assert me.json() == {"user": registered["user"] | profile, "rooms": []}


async def test_register_duplicate_name_is_409(api: Api) -> None:
    await api.register("grace")
    response = await api.client.post(
        "/api/register", json={"name": "grace", "password": "another password"}
    )
    assert_error(response, 409, "name_taken")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "has space", "password": PASSWORD},
        {"name": "", "password": PASSWORD},
        {"name": "x" * 33, "password": PASSWORD},
        {"name": "newline\n", "password": PASSWORD},
        {"name": "nul\u0000", "password": PASSWORD},
        {"name": "short", "password": "1234567"},
        {"name": "long", "password": "p" * 257},
        {"name": "typed", "password": 12345678},
    ],
)
async def test_register_rejects_bad_name_or_password(api: Api, body: dict[str, Any]) -> None:
    assert_error(await api.client.post("/api/register", json=body), 422, "bad_field")


async def test_register_refuses_unknown_and_missing_fields(api: Api) -> None:
    body = {"name": "eve", "password": PASSWORD, "admin": True}
    assert_error(await api.client.post("/api/register", json=body), 422, "unknown_field")
    body = {"name": "eve"}
    assert_error(await api.client.post("/api/register", json=body), 422, "missing_field")


async def test_login_with_wrong_password_or_unknown_name_is_401(api: Api) -> None:
    await api.register("alan")
    for body in (
        {"name": "alan", "password": "wrong password"},
        {"name": "nobody", "password": PASSWORD},
    ):
        assert_error(await api.client.post("/api/login", json=body), 401, "bad_credentials")


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer garbage", "Bearer", "Basic dXNlcjpwYXNz", "garbage", "Bearer " + "x" * 300],
)
async def test_missing_or_bad_token_is_401_with_a_bearer_challenge(
    api: Api, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in [("GET", "/api/me"), ("GET", "/api/rooms"), ("POST", "/api/logout")]:
        response = await api.client.request(method, path, headers=headers)
        assert_error(response, 401, "not_authenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_expired_token_is_401(api: Api) -> None:
    user = await api.register()
    expired = await api.store.create_token(user.id, -1.0)
    response = await api.client.get("/api/me", headers={"Authorization": f"Bearer {expired}"})
    assert_error(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_logout_revokes_only_that_token(api: Api) -> None:
    user = await api.register()
    other = await api.client.post("/api/login", json={"name": user.name, "password": PASSWORD})
    other_auth = {"Authorization": f"Bearer {other.json()['token']}"}

    response = await api.client.post("/api/logout", headers=user.auth)
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["x-content-type-options"] == "nosniff"

    assert_error(await api.client.get("/api/me", headers=user.auth), 401, "not_authenticated")
    assert (await api.client.get("/api/me", headers=other_auth)).status_code == 200


# Rooms ------------------------------------------------------------------------------------


def _public(owner: str, role: str | None) -> dict[str, object]:
    """A public room's settings as a room list shows them, with no topic or slow mode."""
    return {"visibility": "public", "topic": "", "slow_mode": 0, "owner": owner, "role": role}


async def test_create_room_makes_creator_a_member(api: Api) -> None:
    owner = await api.register()
    response = await api.client.post("/api/rooms", json={"name": "lobby"}, headers=owner.auth)
    assert response.status_code == 201
    assert response.json() == {
        "name": "lobby",
        "last_seq": 0,
        "member": True,
        "visibility": "public",
        "topic": "",
        "slow_mode": 0,
        "owner": owner.name,
        "role": "owner",
    }
    assert (await api.client.get("/api/me", headers=owner.auth)).json()["rooms"] == ["lobby"]
    assert await api.store.is_member("lobby", owner.id)
    assert api.membership_changes == [("lobby", owner.id, True)]


async def test_create_room_duplicate_is_409_and_bad_name_is_422(api: Api) -> None:
    owner = await api.register()
    await api.create_room(owner, "lobby")
    response = await api.client.post("/api/rooms", json={"name": "lobby"}, headers=owner.auth)
    assert_error(response, 409, "name_taken")
    for name in ("Lobby", "-lobby", "with space", "", "x" * 65, "lobby\n", "lobby\u0000"):
        response = await api.client.post("/api/rooms", json={"name": name}, headers=owner.auth)
        assert_error(response, 422, "bad_field")


async def test_list_rooms_flags_membership(api: Api) -> None:
    alice, bob = await api.register(), await api.register()
    await api.create_room(alice, "alpha")
    await api.create_room(bob, "beta")
    await api.import_batch(bob, "beta", {"text": "one"}, {"text": "two"})

    response = await api.client.get("/api/rooms", headers=alice.auth)
    assert response.status_code == 200
    assert response.json() == {
        "rooms": [
            {"name": "alpha", "last_seq": 0, "member": True, **_public(alice.name, "owner")},
            {"name": "beta", "last_seq": 2, "member": False, **_public(bob.name, None)},
        ]
    }


async def test_join_and_leave_report_membership_and_notify_the_server(api: Api) -> None:
    owner, guest = await api.register(), await api.register()
    await api.create_room(owner, "lobby")
    api.membership_changes.clear()

    response = await api.client.post("/api/rooms/lobby/join", headers=guest.auth)
    assert response.status_code == 200
    assert response.json() == {"room": "lobby", "member": True}
    assert await api.store.is_member("lobby", guest.id)
    assert api.membership_changes == [("lobby", guest.id, True)]

    response = await api.client.post("/api/rooms/lobby/leave", headers=guest.auth)
    assert response.status_code == 200
    assert response.json() == {"room": "lobby", "member": False}
    assert not await api.store.is_member("lobby", guest.id)
    assert api.membership_changes == [("lobby", guest.id, True), ("lobby", guest.id, False)]


@pytest.mark.parametrize("action", ["join", "leave"])
async def test_join_or_leave_unknown_room_is_404(api: Api, action: str) -> None:
    user = await api.register()
    for room in ("nowhere", "NotARoomName"):
        response = await api.client.post(f"/api/rooms/{room}/{action}", headers=user.auth)
        assert_error(response, 404, "no_such_room")
    assert api.membership_changes == []


async def test_members_are_visible_to_members_only(api: Api) -> None:
    owner, guest, outsider = await api.register(), await api.register(), await api.register()
    await api.create_room(owner, "lobby")
    await api.client.post("/api/rooms/lobby/join", headers=guest.auth)

    response = await api.client.get("/api/rooms/lobby/members", headers=guest.auth)
    assert response.status_code == 200
    assert response.json() == {
        "room": "lobby",
        "members": sorted([owner.name, guest.name]),
        "roles": {owner.name: "owner", guest.name: "member"},
    }

    response = await api.client.get("/api/rooms/lobby/members", headers=outsider.auth)
    assert_error(response, 403, "not_member")
    response = await api.client.get("/api/rooms/nowhere/members", headers=outsider.auth)
    assert_error(response, 404, "no_such_room")


# History ----------------------------------------------------------------------------------


async def test_history_pages_walk_every_message_once_oldest_first(api: Api) -> None:
    user = await api.register()
    await api.create_room(user, "lobby")
    total = 23
    for start in range(0, total, 10):
        items = [{"text": f"m{i}"} for i in range(start, min(start + 10, total))]
        assert (await api.import_batch(user, "lobby", *items)).status_code == 201

    seen: list[int] = []
    pages: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        params: dict[str, int] = (
            {"limit": 5} if before is None else {"limit": 5, "before_seq": before}
        )
        response = await api.client.get(
            "/api/rooms/lobby/messages", params=params, headers=user.auth
        )
        assert response.status_code == 200
        page = response.json()
        pages.append(page)
        seqs = [m["seq"] for m in page["messages"]]
        assert seqs == sorted(seqs)  # oldest first within the page
        seen = seqs + seen
        if not page["has_more"]:
            break
        before = seqs[0]
    assert seen == list(range(1, total + 1))
    assert [len(p["messages"]) for p in pages] == [5, 5, 5, 5, 3]
    assert [p["has_more"] for p in pages] == [True, True, True, True, False]
    assert [m["text"] for m in pages[0]["messages"]] == [f"m{i}" for i in range(18, 23)]


async def test_history_messages_are_encoded_like_the_websocket_event(api: Api) -> None:
    user = await api.register()
    await api.create_room(user, "lobby")
    await api.import_batch(user, "lobby", {"text": "plain"}, {"text": "tagged", "client_id": "c1"})
    stored, _ = await api.store.history("lobby", None, 10)

    response = await api.client.get("/api/rooms/lobby/messages", headers=user.auth)
    body = response.json()
    assert body["room"] == "lobby"
    assert body["has_more"] is False
    assert body["messages"] == [json.loads(protocol.encode(m)) for m in stored]
    assert body["messages"][0]["type"] == "message"
    assert "client_id" not in body["messages"][0]  # omitted when unset, as on the WebSocket
    assert body["messages"][1]["client_id"] == "c1"


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=201", "limit=abc", "limit=-1", "limit=1.5", "before_seq=0", "before_seq=x"],
)
async def test_history_rejects_bad_paging_parameters(api: Api, query: str) -> None:
    user = await api.register()
    await api.create_room(user, "lobby")
    response = await api.client.get(f"/api/rooms/lobby/messages?{query}", headers=user.auth)
    assert_error(response, 422, "bad_field")


async def test_history_for_non_member_is_403_and_unknown_room_404(api: Api) -> None:
    owner, outsider = await api.register(), await api.register()
    await api.create_room(owner, "lobby")
    response = await api.client.get("/api/rooms/lobby/messages", headers=outsider.auth)
    assert_error(response, 403, "not_member")
    response = await api.client.get("/api/rooms/nowhere/messages", headers=outsider.auth)
    assert_error(response, 404, "no_such_room")


# Batch import -----------------------------------------------------------------------------


async def test_batch_import_stores_in_order_and_publishes_after_commit(api: Api) -> None:
    user = await api.register()
    await api.create_room(user, "lobby")
    items = [{"text": f"m{i}", "client_id": f"c{i}"} for i in range(5)] + [{"text": "no id"}]
    response = await api.import_batch(user, "lobby", *items)
    assert response.status_code == 201
    body = response.json()
    assert body["room"] == "lobby"
    results = body["results"]
    assert [r["seq"] for r in results] == [1, 2, 3, 4, 5, 6]
    assert [r["client_id"] for r in results] == [*(f"c{i}" for i in range(5)), None]
    assert [r["duplicate"] for r in results] == [False] * 6
    assert [r["id"] for r in results] == sorted(r["id"] for r in results)

    stored, _ = await api.store.history("lobby", None, 100)
    assert [m.text for m in stored] == [item["text"] for item in items]
    assert [m.seq for m in stored] == [1, 2, 3, 4, 5, 6]
    assert api.published == [stored]  # one call, after the commit, with what was stored


async def test_batch_import_reports_duplicates_and_does_not_publish_them(api: Api) -> None:
    user = await api.register()
    await api.create_room(user, "lobby")
    first = (await api.import_batch(user, "lobby", {"text": "a", "client_id": "a"})).json()
    api.published.clear()

    response = await api.import_batch(
        user,
        "lobby",
        {"text": "a again", "client_id": "a"},
        {"text": "b", "client_id": "b"},
        {"text": "b again", "client_id": "b"},
    )
    assert response.status_code == 201
    results = response.json()["results"]
    assert [(r["client_id"], r["duplicate"]) for r in results] == [
        ("a", True),
        ("b", False),
        ("b", True),
    ]
    assert (results[0]["id"], results[0]["seq"]) == (first["results"][0]["id"], 1)
    assert results[1]["seq"] == results[2]["seq"] == 2
    assert [[(m.text, m.seq) for m in call] for call in api.published] == [[("b", 2)]]

    everything_duplicate = await api.import_batch(user, "lobby", {"text": "x", "client_id": "a"})
    assert everything_duplicate.json()["results"][0]["duplicate"] is True
    assert len(api.published) == 1
    assert await api.store.last_seq("lobby") == 2


async def test_batch_over_max_batch_is_413_and_stores_nothing(api: Api) -> None:
    user = await api.register()
    await api.create_room(user, "lobby")
    items = [{"text": f"m{i}"} for i in range(MAX_BATCH + 1)]
    assert_error(await api.import_batch(user, "lobby", *items), 413, "too_large")
    assert await api.store.last_seq("lobby") == 0
    assert api.published == []


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "text_empty"),
        ("  \n", "text_empty"),
        ("x" * (MAX_TEXT + 1), "text_too_long"),
        ("nul\u0000inside", "text_invalid"),
        ("\u001b[2J", "text_invalid"),
        ("\uffff", "text_invalid"),
    ],
)
async def test_batch_with_one_bad_text_is_422_naming_it_and_stores_nothing(
    api: Api, text: str, code: str
) -> None:
    user = await api.register()
    await api.create_room(user, "lobby")
    response = await api.import_batch(
        user, "lobby", {"text": "fine"}, {"text": "ok"}, {"text": text}
    )
    error = assert_error(response, 422, code)
    assert "messages[2]" in error["message"]
    assert await api.store.last_seq("lobby") == 0
    assert api.published == []


async def test_batch_text_at_the_limit_is_accepted(api: Api) -> None:
    user = await api.register()
    await api.create_room(user, "lobby")
    response = await api.import_batch(user, "lobby", {"text": "x" * MAX_TEXT})
    assert response.status_code == 201


async def test_batch_text_keeps_tabs_and_newlines(api: Api) -> None:
    user = await api.register()
    await api.create_room(user, "lobby")
    response = await api.import_batch(user, "lobby", {"text": "two\r\nlines\tand a tab"})
    assert response.status_code == 201
    messages, _ = await api.store.history("lobby", None, 10)
    assert [m.text for m in messages] == ["two\r\nlines\tand a tab"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"messages": [{"text": "hi", "colour": "red"}]}, "unknown_field"),
        ({"messages": [{"text": "hi"}], "extra": 1}, "unknown_field"),
        ({"messages": [{"client_id": "c"}]}, "missing_field"),
        ({"messages": []}, "bad_field"),
        ({"messages": [{"text": "hi", "client_id": ""}]}, "bad_field"),
        ({"messages": [{"text": "hi", "client_id": "c\u0000"}]}, "bad_field"),
        ('{"messages": [{"text": "lone \\ud800"}]}', "bad_json"),
        ({"messages": "hi"}, "bad_field"),
        ([], "not_an_object"),
    ],
)
async def test_batch_rejects_malformed_items(api: Api, body: Any, code: str) -> None:
    user = await api.register()
    await api.create_room(user, "lobby")
    content = body if isinstance(body, str) else json.dumps(body)
    response = await api.client.post(
        "/api/rooms/lobby/messages:batch", content=content, headers=user.auth
    )
    assert_error(response, 422, code)
    assert await api.store.last_seq("lobby") == 0


async def test_batch_for_non_member_is_403_and_unknown_room_404(api: Api) -> None:
    owner, outsider = await api.register(), await api.register()
    await api.create_room(owner, "lobby")
    assert_error(await api.import_batch(outsider, "lobby", {"text": "hi"}), 403, "not_member")
    assert_error(await api.import_batch(outsider, "nowhere", {"text": "hi"}), 404, "no_such_room")
    assert api.published == []


# Transport-level errors and health ---------------------------------------------------------


async def test_body_over_one_mib_is_413_json(api: Api) -> None:
    user = await api.register()
    await api.create_room(user, "lobby")
    text = "x" * (1024 * 1024)
    body = json.dumps({"messages": [{"text": text}]}).encode()
    response = await api.client.post(
        "/api/rooms/lobby/messages:batch",
        content=body,
        headers={**user.auth, "Content-Type": "application/json"},
    )
    assert_error(response, 413, "too_large")
    assert await api.store.last_seq("lobby") == 0


async def test_chunked_body_over_one_mib_is_413_json(api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(17):
            yield b" " * 65536  # whitespace is valid JSON padding; the size is what matters

    response = await api.client.post("/api/login", content=chunks())
    assert_error(response, 413, "too_large")


@pytest.mark.parametrize(
    "body",
    [b"{", b"", b"{'name': 1}", b'{"name": "a", "password": "b"} trailing'],
)
async def test_malformed_json_is_422_bad_json(api: Api, body: bytes) -> None:
    response = await api.client.post("/api/login", content=body)
    assert_error(response, 422, "bad_json")


async def test_deeply_nested_body_is_422_not_500(api: Api) -> None:
    for body in (b"[" * 100_000, b'{"name": ' + b"[" * 100_000):
        response = await api.client.post("/api/login", content=body)
        assert response.status_code == 422, response.text


async def test_body_that_is_not_utf8_is_422_bad_encoding(api: Api) -> None:
    response = await api.client.post("/api/login", content=b'{"name": "\xff", "password": "x"}')
    assert_error(response, 422, "bad_encoding")


async def test_unknown_route_is_404_json(api: Api) -> None:
    for path in ("/nope", "/api/nope", "/api/rooms/lobby/messages/extra"):
        assert_error(await api.client.get(path), 404, "not_found")


async def test_wrong_method_is_405_json_with_allow(api: Api) -> None:
    for method in ("DELETE", "OPTIONS"):
        response = await api.client.request(method, "/api/rooms")
        assert_error(response, 405, "method_not_allowed")
        assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    assert_error(await api.client.get("/api/login"), 405, "method_not_allowed")


async def test_healthz_reports_server_id(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "server_id": "test-http", "bus": "local"}
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_readyz_follows_readiness(api: Api) -> None:
    response = await api.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "bus": "local"}

    api.not_ready = "draining"
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "draining", "bus": "local"}
    assert response.headers["content-type"] == "application/json"


async def test_unexpected_exception_is_500_without_details(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    api.readiness_error = RuntimeError("secret detail")
    response = await api.client.get("/readyz")
    error = assert_error(response, 500, "internal")
    assert "secret" not in response.text
    assert error["message"] == "internal error"
    assert any(r.exc_info and "secret detail" in str(r.exc_info[1]) for r in caplog.records)

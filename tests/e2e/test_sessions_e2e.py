"""Profiles and sessions over HTTP on a real server (issue #15), on SQLite and on PostgreSQL:
display name and last_seen, listing and revoking sessions (their WebSockets close with 4001),
and a password change that revokes the other sessions and goes through the login throttle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from protocol import CloseCode
from server.config import Config

from ..conftest import STEP, Account, Connect, make_config, register
from ..postgres import TestDatabases


@pytest.fixture(params=["sqlite", "postgresql"])
def server_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Config]:
    overrides: dict[str, Any] = {"login_account_limit": 3, "login_address_limit": 100}
    if request.param == "sqlite":
        yield make_config(tmp_path, **overrides)
        return
    databases = TestDatabases()
    try:
        yield make_config(tmp_path, db_path=databases.url("sessions"), pool_size=3, **overrides)
    finally:
        databases.drop_all()


def _auth(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.token}"}


async def _log_in(
    http: httpx.AsyncClient, account: Account, password: str = "correct horse", **extra: Any
) -> Account:
    body = {"name": account.name, "password": password}
    headers = extra.pop("headers", {})
    response = await http.post("/api/login", json=body | extra, headers=headers)
    assert response.status_code == 200, response.text
    return Account(account.name, response.json()["token"])


async def _closed_with(ws: WebSocketConnection, code: int, reason: str) -> None:
    with trio.fail_after(STEP), pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    assert closed.value.reason is not None
    assert (closed.value.reason.code, closed.value.reason.reason) == (code, reason)


async def _sessions(http: httpx.AsyncClient, account: Account) -> list[dict[str, Any]]:
    response = await http.get("/api/sessions", headers=_auth(account))
    assert response.status_code == 200, response.text
    sessions: list[dict[str, Any]] = response.json()["sessions"]
    return sessions


async def test_display_name_is_set_validated_and_shown_to_other_users(
    http: httpx.AsyncClient,
) -> None:
    alice, bob = await register(http), await register(http)
    me = (await http.get("/api/me", headers=_auth(alice))).json()
    assert me["user"]["display_name"] is None and "last_seen" in me["user"]
    changed = await http.patch("/api/me", json={"display_name": " Alice L. "}, headers=_auth(alice))
    assert changed.status_code == 200, changed.text
    assert changed.json()["user"]["display_name"] == "Alice L."
    for bad in ("x" * 65, "two\nlines", "\u202eevil"):
        refused = await http.patch("/api/me", json={"display_name": bad}, headers=_auth(alice))
        assert refused.status_code == 400, bad
        assert refused.json()["error"]["code"] == "bad_field"
    seen = await http.get(f"/api/users/{alice.name}", headers=_auth(bob))
    assert seen.status_code == 200
    assert seen.json() == {"name": alice.name, "display_name": "Alice L.", "last_seen": None}
    missing = await http.get("/api/users/nobody-here", headers=_auth(bob))
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert (await http.get(f"/api/users/{alice.name}")).status_code == 401


async def test_last_seen_is_recorded_when_the_users_last_connection_closes(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = await register(http), await register(http)
    second = await _log_in(http, alice)
    async with connect(alice), connect(second):
        pass  # the first closes while the second is open; then the second: the last one
    with trio.fail_after(STEP):  # written as the last one closed, not at the next interval
        while True:
            profile = (await http.get(f"/api/users/{alice.name}", headers=_auth(bob))).json()
            if profile["last_seen"] is not None:
                break
            await trio.sleep(0.02)
    used = {s["last_used_at"] for s in await _sessions(http, second)}
    assert max(used) <= profile["last_seen"]


async def test_sessions_are_listed_with_device_and_current_and_never_the_token(
    http: httpx.AsyncClient,
) -> None:
    alice = await register(http)
    await _log_in(http, alice, headers={"User-Agent": "Firefox/140 on Linux"})
    phone = await _log_in(http, alice, device="alice's phone")
    sessions = await _sessions(http, phone)
    assert len(sessions) == 3
    assert [s["device"] for s in sessions if s["current"]] == ["alice's phone"]
    assert "Firefox/140 on Linux" in {s["device"] for s in sessions}
    for session in sessions:
        assert set(session) == {"id", "device", "created_at", "last_used_at", "expires_at"} | {
            "current"
        }
        assert session["id"] not in (alice.token, phone.token)


async def test_revoking_a_session_closes_its_websockets_and_others_ids_are_not_found(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = await register(http), await register(http)
    laptop = await _log_in(http, alice, device="laptop")
    (laptop_id,) = [s["id"] for s in await _sessions(http, alice) if s["device"] == "laptop"]
    bobs_id = (await _sessions(http, bob))[0]["id"]
    gone = await http.delete(f"/api/sessions/{bobs_id}", headers=_auth(alice))
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "not_found")
    assert (await http.get("/api/me", headers=_auth(bob))).status_code == 200
    for odd in ("not-an-id", "x" * 300, "0" * 16):
        assert (await http.delete(f"/api/sessions/{odd}", headers=_auth(alice))).status_code == 404
    async with connect(laptop) as socket, connect(alice) as kept:
        revoked = await http.delete(f"/api/sessions/{laptop_id}", headers=_auth(alice))
        assert revoked.status_code == 204
        await _closed_with(socket.ws, CloseCode.UNAUTHENTICATED, "token revoked")
        await kept.send(type="ping", ref="p")
        assert (await kept.expect("pong"))["ref"] == "p"
    assert (await http.get("/api/me", headers=_auth(laptop))).status_code == 401
    again = await http.delete(f"/api/sessions/{laptop_id}", headers=_auth(alice))
    assert again.status_code == 404


async def test_revoke_all_but_current_then_all(http: httpx.AsyncClient, connect: Connect) -> None:
    alice = await register(http)
    others = [await _log_in(http, alice) for _ in range(2)]
    async with connect(others[0]) as socket:
        response = await http.delete("/api/sessions", headers=_auth(alice))
        assert response.json() == {"revoked": 2}
        await _closed_with(socket.ws, CloseCode.UNAUTHENTICATED, "token revoked")
    assert [s["current"] for s in await _sessions(http, alice)] == [True]
    bad = await http.delete("/api/sessions?all=maybe", headers=_auth(alice))
    assert bad.status_code == 422
    response = await http.delete("/api/sessions?all=true", headers=_auth(alice))
    assert response.json() == {"revoked": 1}
    assert (await http.get("/api/me", headers=_auth(alice))).status_code == 401


async def test_password_change_checks_the_old_throttles_and_revokes_the_other_sessions(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice = await register(http)
    other = await _log_in(http, alice)
    wrong = await http.post(
        "/api/password", json={"old": "not it", "new": "new password"}, headers=_auth(alice)
    )
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "bad_credentials")
    short = await http.post(
        "/api/password", json={"old": "correct horse", "new": "short"}, headers=_auth(alice)
    )
    assert short.status_code == 422
    async with connect(other) as socket:
        changed = await http.post(
            "/api/password",
            json={"old": "correct horse", "new": "new password"},
            headers=_auth(alice),
        )
        assert changed.status_code == 200, changed.text
        assert changed.json() == {"revoked": 1}
        await _closed_with(socket.ws, CloseCode.UNAUTHENTICATED, "token revoked")
    assert (await http.get("/api/me", headers=_auth(alice))).status_code == 200
    refused = await http.post("/api/login", json={"name": alice.name, "password": "correct horse"})
    assert refused.status_code == 401
    await _log_in(http, alice, "new password")


async def test_guessing_the_old_password_is_throttled_like_a_login(
    http: httpx.AsyncClient,
) -> None:
    alice = await register(http)
    statuses = []
    for _ in range(4):  # the account limit is 3 (server_config)
        response = await http.post(
            "/api/password", json={"old": "guess", "new": "new password"}, headers=_auth(alice)
        )
        statuses.append(response.status_code)
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3] == 429
    assert response.json()["error"]["code"] == "too_many_attempts"
    assert "Retry-After" in response.headers

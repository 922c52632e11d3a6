"""Sessions across real `hibiki serve` processes on one Redis (issue #15), on SQLite and on
PostgreSQL (`cluster_db`): a session revoked on node A, and a password changed on node A, close
the revoked tokens' sockets on node B (4001) through the logout's revocation path, and node B
no longer accepts those tokens."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from protocol import CloseCode

from ..conftest import STEP, Account, Peer, register
from .conftest import Cluster, http_of, open_cluster, peer_on


def _auth(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.token}"}


async def _closed_with(peer: Peer, code: int, reason: str) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await peer.ws.get_message()
    assert closed.value.reason is not None
    assert (closed.value.reason.code, closed.value.reason.reason) == (code, reason)


async def _alice_twice(cluster: Cluster) -> tuple[Account, Account]:
    """A user registered on node A, and a second session of theirs (logged in on node B)."""
    async with http_of(cluster.nodes[0]) as http:
        alice = await register(http)
    async with http_of(cluster.nodes[1]) as http:
        body: dict[str, Any] = {"name": alice.name, "password": "correct horse", "device": "B"}
        response = await http.post("/api/login", json=body)
    assert response.status_code == 200, response.text
    return alice, Account(alice.name, response.json()["token"])


async def _accepted_on(cluster: Cluster, node: int, account: Account) -> bool:
    async with http_of(cluster.nodes[node]) as http:
        me = await http.get("/api/me", headers=_auth(account))
    assert me.status_code in (200, 401), me.text
    return me.status_code == 200


async def test_a_session_revoked_on_one_node_closes_its_socket_on_another(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            alice, on_b = await _alice_twice(cluster)
            assert await _accepted_on(cluster, 1, on_b)  # in node B's token cache now
            async with peer_on(cluster.nodes[1], on_b) as b, http_of(cluster.nodes[0]) as http:
                listed = (await http.get("/api/sessions", headers=_auth(alice))).json()
                (session_id,) = [s["id"] for s in listed["sessions"] if s["device"] == "B"]
                revoked = await http.delete(f"/api/sessions/{session_id}", headers=_auth(alice))
                assert revoked.status_code == 204
                with trio.fail_after(2.0):  # confirmed by node B before the 204
                    await _closed_with(b, CloseCode.UNAUTHENTICATED, "token revoked")
            assert not await _accepted_on(cluster, 1, on_b)
            assert await _accepted_on(cluster, 1, alice)


async def test_a_password_changed_on_one_node_closes_the_other_sessions_on_another(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            alice, on_b = await _alice_twice(cluster)
            assert await _accepted_on(cluster, 1, on_b)
            async with (
                peer_on(cluster.nodes[1], on_b) as b,
                peer_on(cluster.nodes[1], alice) as kept,
                http_of(cluster.nodes[0]) as http,
            ):
                changed = await http.post(
                    "/api/password",
                    json={"old": "correct horse", "new": "another horse"},
                    headers=_auth(alice),
                )
                assert changed.json() == {"revoked": 1}
                with trio.fail_after(2.0):
                    await _closed_with(b, CloseCode.UNAUTHENTICATED, "token revoked")
                await kept.send(type="ping", ref="p")  # the changing session's socket stays
                assert (await kept.expect("pong"))["ref"] == "p"
            assert not await _accepted_on(cluster, 1, on_b)

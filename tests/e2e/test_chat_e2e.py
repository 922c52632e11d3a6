"""End to end through the real server: real sockets on 127.0.0.1, a real SQLite file."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from client import open_websocket
from protocol import CloseCode

from ..conftest import (
    STEP,
    Connect,
    Peer,
    RunningServer,
    create_room,
    join_room,
    make_config,
    register,
    running_server,
)
from ..rawws import RawWs


async def test_two_users_chat_in_a_room(http: httpx.AsyncClient, connect: Connect) -> None:
    alice, bob = await register(http), await register(http)
    await create_room(http, alice, "lobby")
    await join_room(http, bob, "lobby")
    async with connect(alice) as a, connect(bob) as b:
        await a.send(type="send", room="lobby", text="hello bob", client_id="c1", ref="r1")
        ack = await a.expect("ack", skip=("presence", "message"))
        assert (ack["room"], ack["seq"], ack["client_id"], ack["ref"]) == ("lobby", 1, "c1", "r1")
        got = await b.expect("message")
        assert got["text"] == "hello bob" and got["user"] == alice.name
        assert (got["id"], got["seq"]) == (ack["id"], ack["seq"])
        await b.send(type="send", room="lobby", text="hi alice")
        reply = await a.expect("message")
        assert (reply["user"], reply["text"], reply["seq"]) == (bob.name, "hi alice", 2)


async def test_sender_receives_its_own_message_and_ack(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice = await register(http)
    await create_room(http, alice, "solo")
    async with connect(alice) as a:
        await a.send(type="send", room="solo", text="echo", client_id="x")
        message = await a.expect("message")
        ack = await a.expect("ack")
        assert message["seq"] == ack["seq"] == 1 and message["id"] == ack["id"]


async def test_non_member_cannot_send_or_read(http: httpx.AsyncClient, connect: Connect) -> None:
    owner, outsider = await register(http), await register(http)
    await create_room(http, owner, "private")
    async with connect(outsider) as o:
        await o.send(type="send", room="private", text="let me in", ref="s")
        error = await o.expect("error")
        assert (error["code"], error["ref"]) == ("not_member", "s")
        await o.send(type="history", room="private", ref="h")
        error = await o.expect("error")
        assert (error["code"], error["ref"]) == ("not_member", "h")
    history = await http.get(
        "/api/rooms/private/messages", headers={"Authorization": f"Bearer {owner.token}"}
    )
    assert history.json()["messages"] == []


async def test_join_over_websocket_subscribes_and_reports_last_seq(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    owner, guest = await register(http), await register(http)
    await create_room(http, owner, "open")
    async with connect(owner) as o, connect(guest) as g:
        await o.send(type="send", room="open", text="before")
        await o.expect("ack", skip=("presence", "message"))
        await g.send(type="join", room="open", ref="j")
        joined = await g.expect("joined")
        assert (joined["last_seq"], joined["ref"]) == (1, "j")
        assert owner.name in joined["online"]
        presence = await o.expect("presence", skip=("message", "ack"))
        assert (presence["user"], presence["status"]) == (guest.name, "online")
        await o.send(type="send", room="open", text="after")
        assert (await g.expect("message"))["text"] == "after"
        await g.send(type="join", room="nowhere")
        assert (await g.expect("error"))["code"] == "no_such_room"


async def test_resume_delivers_missed_messages_in_order_without_duplicates(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, carol = await register(http), await register(http)
    await create_room(http, alice, "news")
    await join_room(http, carol, "news")
    async with connect(alice) as a:
        async with connect(carol) as c:
            await a.send(type="send", room="news", text="m1")
            seen = await c.expect("message")
            assert seen["seq"] == 1
        for i in range(2, 6):
            await a.send(type="send", room="news", text=f"m{i}", client_id=f"m{i}")
            await a.expect("ack", skip=("presence", "message"))
        async with connect(carol, resume={"news": 1}) as c:
            missed = [await c.expect("message") for _ in range(4)]
            assert [m["seq"] for m in missed] == [2, 3, 4, 5]
            assert [m["text"] for m in missed] == ["m2", "m3", "m4", "m5"]
            await a.send(type="send", room="news", text="live")
            live = await c.expect("message")
            assert (live["seq"], live["text"]) == (6, "live")
            seqs = [e["seq"] for e in c.seen if e["type"] == "message"]
            assert seqs == sorted(set(seqs))


async def test_resume_with_too_large_gap_asks_for_resync(tmp_path: Path) -> None:
    config = make_config(tmp_path, resume_max_gap=2)
    async with running_server(config) as server, httpx.AsyncClient(base_url=server.http) as http:
        alice = await register(http)
        await create_room(http, alice, "busy")
        batch = {"messages": [{"text": f"t{i}"} for i in range(5)]}
        auth = {"Authorization": f"Bearer {alice.token}"}
        assert (
            await http.post("/api/rooms/busy/messages:batch", json=batch, headers=auth)
        ).status_code == 201
        async with _connect(server, alice.token, resume={"busy": 1}) as ws:
            events = [json.loads(await ws.get_message()) for _ in range(2)]
            assert events[0]["type"] == "welcome"
            assert events[1] == {
                "type": "resync",
                "room": "busy",
                "last_seq": 5,
                "reason": "gap_too_large",
            }


async def test_duplicate_client_id_is_stored_once(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice = await register(http)
    await create_room(http, alice, "dup")
    async with connect(alice) as a:
        client_id = str(uuid.uuid4())
        await a.send(type="send", room="dup", text="once", client_id=client_id)
        first = await a.expect("ack", skip=("presence", "message"))
        await a.send(type="send", room="dup", text="once", client_id=client_id)
        second = await a.expect("ack", skip=("presence", "message"))
        assert (second["id"], second["seq"], second["duplicate"]) == (
            first["id"],
            first["seq"],
            True,
        )
        assert "duplicate" not in first
    page = await http.get(
        "/api/rooms/dup/messages", headers={"Authorization": f"Bearer {alice.token}"}
    )
    assert [m["text"] for m in page.json()["messages"]] == ["once"]


async def test_history_pages_over_websocket(http: httpx.AsyncClient, connect: Connect) -> None:
    alice = await register(http)
    await create_room(http, alice, "archive")
    auth = {"Authorization": f"Bearer {alice.token}"}
    batch = {"messages": [{"text": f"h{i}"} for i in range(1, 8)]}
    assert (
        await http.post("/api/rooms/archive/messages:batch", json=batch, headers=auth)
    ).status_code == 201
    async with connect(alice) as a:
        texts: list[str] = []
        before = None
        while True:
            request = {"type": "history", "room": "archive", "limit": 3}
            if before is not None:
                request["before_seq"] = before
            await a.send(**request)
            page = await a.expect("history")
            texts = [m["text"] for m in page["messages"]] + texts
            if not page["has_more"]:
                break
            before = page["messages"][0]["seq"]
        assert texts == [f"h{i}" for i in range(1, 8)]


async def test_invalid_frames_get_error_frames_and_connection_survives(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice = await register(http)
    async with connect(alice) as a:
        await a.ws.send_message("{not json")
        assert (await a.expect("error"))["code"] == "bad_json"
        await a.send(type="send", room="r", text="x" * 4001, ref="long")
        error = await a.expect("error")
        assert (error["code"], error["ref"]) == ("text_too_long", "long")
        await a.send(type="nope")
        assert (await a.expect("error"))["code"] == "unknown_type"
        await a.send(type="ping", ref="p")
        assert (await a.expect("pong"))["ref"] == "p"


async def test_send_with_a_nul_character_is_refused_and_nothing_is_stored(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice = await register(http)
    await create_room(http, alice, "portable")
    async with connect(alice) as a:
        await a.send(type="send", room="portable", text="nul\u0000here", client_id="n", ref="s")
        error = await a.expect("error")
        assert (error["code"], error["ref"]) == ("text_invalid", "s")
        assert error["message"] == "text contains U+0000 (a control character) at index 3"
        await a.send(type="send", room="portable", text="two\r\nlines\tok", client_id="ok")
        assert (await a.expect("message"))["text"] == "two\r\nlines\tok"
        assert (await a.expect("ack"))["seq"] == 1
    page = await http.get(
        "/api/rooms/portable/messages", headers={"Authorization": f"Bearer {alice.token}"}
    )
    assert [m["text"] for m in page.json()["messages"]] == ["two\r\nlines\tok"]


async def test_requests_before_hello_are_refused(connect: Connect) -> None:
    async with connect() as anon:
        await anon.send(type="join", room="lobby", ref="early")
        error = await anon.expect("error")
        assert (error["code"], error["ref"]) == ("not_authenticated", "early")


async def test_bad_token_closes_with_4001(server: RunningServer) -> None:
    async with _connect(server, "not-a-token") as ws:
        event = json.loads(await ws.get_message())
        assert event["code"] == "bad_token"
        await _assert_closed_with(ws, CloseCode.UNAUTHENTICATED)


async def test_too_many_protocol_errors_close_with_policy(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_protocol_errors=3)
    async with running_server(config) as server, _connect(server, None) as ws:
        for _ in range(3):
            await ws.send_message("garbage")
        await _assert_closed_with(ws, CloseCode.POLICY)


async def test_requests_before_hello_count_towards_the_protocol_error_limit(
    server: RunningServer,
) -> None:
    limit = server.config.limits.max_protocol_errors
    async with _connect(server, None) as ws:
        # Malformed frames and requests before hello share one count.
        for i in range(limit - 1):
            await ws.send_message("garbage" if i % 2 else json.dumps({"type": "join", "room": "r"}))
        await ws.send_message(json.dumps({"type": "ping", "ref": "alive"}))
        with trio.fail_after(STEP):
            codes = [json.loads(await ws.get_message()).get("code") for _ in range(limit)]
        assert codes[:-1] == ["not_authenticated", "bad_json"] * (limit // 2 - 1) + [
            "not_authenticated"
        ]
        assert codes[-1] is None  # the pong: one short of the limit, still open
        await ws.send_message(json.dumps({"type": "join", "room": "r", "ref": "last"}))
        error = json.loads(await ws.get_message())
        assert (error["code"], error["ref"]) == ("not_authenticated", "last")
        await _assert_closed_with(ws, CloseCode.POLICY, "too many protocol errors")


async def test_oversize_frame_closes_with_1009(server: RunningServer) -> None:
    async with RawWs.open(server.port) as raw:
        assert b" 101 " in await raw.read_response_head()
        await raw.send_frame(b"x" * (server.config.limits.max_frame + 1))
        with trio.fail_after(STEP):
            assert await raw.read_until_close() == CloseCode.TOO_BIG


async def test_frame_limit_counts_utf8_bytes_not_characters(server: RunningServer) -> None:
    async with RawWs.open(server.port) as raw:
        assert b" 101 " in await raw.read_response_head()
        # 22,000 three-byte characters: under the limit in characters, over it in bytes.
        await raw.send_frame(("日" * 22_000).encode())
        with trio.fail_after(STEP):
            assert await raw.read_until_close() == CloseCode.TOO_BIG


async def test_upgrade_without_websocket_version_is_refused(server: RunningServer) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        with trio.fail_after(STEP):
            response = await stream.receive_some()
    assert response.startswith(b"HTTP/1.1 426 ")


async def test_foreign_origin_is_refused_at_handshake(server: RunningServer) -> None:
    async with RawWs.open(server.port, origin="https://evil.example") as raw:
        assert b" 403 " in await raw.read_response_head()
    async with RawWs.open(server.port, origin=f"http://127.0.0.1:{server.port}") as same:
        assert b" 101 " in await same.read_response_head()


async def test_rate_limited_send_is_refused_and_not_stored(tmp_path: Path) -> None:
    config = make_config(tmp_path, rate_per_second=0.001, rate_burst=2)
    async with running_server(config) as server, httpx.AsyncClient(base_url=server.http) as http:
        alice = await register(http)
        await create_room(http, alice, "calm")
        async with _connect(server, alice.token) as ws:
            for i in range(3):
                await ws.send_message(
                    json.dumps({"type": "send", "room": "calm", "text": f"t{i}", "ref": str(i)})
                )
            events = [json.loads(await ws.get_message()) for _ in range(6)]
            errors = [e for e in events if e["type"] == "error"]
            assert [(e["code"], e["ref"]) for e in errors] == [("rate_limited", "2")]
        page = await http.get(
            "/api/rooms/calm/messages", headers={"Authorization": f"Bearer {alice.token}"}
        )
        assert [m["text"] for m in page.json()["messages"]] == ["t0", "t1"]


async def test_client_that_never_says_hello_is_closed(tmp_path: Path) -> None:
    config = make_config(tmp_path, hello_timeout=0.3)
    async with running_server(config) as server, _connect(server, None) as ws:
        await _assert_closed_with(ws, CloseCode.UNAUTHENTICATED)


async def test_silent_client_is_reaped(tmp_path: Path) -> None:
    config = make_config(tmp_path, heartbeat_interval=0.2, heartbeat_deadline=0.3)
    async with running_server(config) as server, httpx.AsyncClient(base_url=server.http) as http:
        alice = await register(http)
        async with RawWs.open(server.port) as raw:
            assert b" 101 " in await raw.read_response_head()
            await raw.send_frame(json.dumps({"type": "hello", "token": alice.token}).encode())
            pings = 0
            with trio.fail_after(STEP):
                while True:  # read but never answer pings
                    frame = await raw.read_frame()
                    assert frame is not None
                    opcode, payload = frame
                    if opcode == 0x9:
                        pings += 1
                    if opcode == 0x8:
                        assert int.from_bytes(payload[:2], "big") == CloseCode.STALE
                        break
        assert pings >= 1


async def test_slow_consumer_is_cut_off_while_others_keep_receiving(tmp_path: Path) -> None:
    # A long close_timeout: the silent peer only reads its close frame once the flood is over.
    # synchronous=OFF: this is about fan-out, not durability, so no fsync per commit (1,500 of
    # them took over 60 s on a busy disk once).
    config = make_config(
        tmp_path,
        outbound_limit=256 * 1024,
        rate_per_second=0,
        close_timeout=STEP * 6,
        sqlite_synchronous="OFF",
    )
    async with running_server(config) as server, httpx.AsyncClient(base_url=server.http) as http:
        alice, slow_user, fast_user = [await register(http) for _ in range(3)]
        await create_room(http, alice, "flood")
        await join_room(http, slow_user, "flood")
        await join_room(http, fast_user, "flood")
        async with (
            RawWs.open(server.port, rcvbuf=4096) as slow,
            _connect(server, fast_user.token) as fast,
            _connect(server, alice.token) as sender,
        ):
            assert b" 101 " in await slow.read_response_head()
            await slow.send_frame(json.dumps({"type": "hello", "token": slow_user.token}).encode())
            text = "x" * 3900
            # ~6 MB: past what the kernel buffers for the silent peer (tcp_wmem max is 4 MiB
            # here) plus its 256 KiB backlog bound.
            total = 1500
            counts = {"fast": 0, "sender": 0, "acks": 0}
            # Sends in flight: enough for the writer to commit several per batch, few enough
            # (20 x 3.9 KB) that one batch's fan-out stays well under a reader's 256 KiB bound.
            in_flight = trio.Semaphore(20)

            async def read(ws: WebSocketConnection, name: str) -> None:
                while counts[name] < total or (name == "sender" and counts["acks"] < total):
                    event = json.loads(await ws.get_message())
                    if event["type"] == "message":
                        counts[name] += 1
                    elif event["type"] == "ack":
                        counts["acks"] += 1
                        in_flight.release()

            with trio.fail_after(STEP * 6):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read, fast, "fast")
                    nursery.start_soon(read, sender, "sender")
                    for i in range(total):
                        await in_flight.acquire()
                        frame = {"type": "send", "room": "flood", "text": text, "client_id": str(i)}
                        await sender.send_message(json.dumps(frame))
            assert counts == {"fast": total, "sender": total, "acks": total}
            with trio.fail_after(STEP):
                assert await slow.read_until_close() == CloseCode.SLOW_CONSUMER
        counted = 'hibiki_connections_closed_total{reason="slow_consumer"} 1.0'
        # The server's own close (the peer sent none), counted as its handler ends.
        with trio.fail_after(STEP):
            while True:
                if counted in (await http.get("/metrics")).text:
                    break
                await trio.sleep(0.01)


_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


async def test_the_docs_worked_example_is_what_the_server_answers(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    """docs/protocol.md's first transcript, replayed: the same answers, but for times and ids."""
    example = _DOC.read_text(encoding="utf-8").split("## Worked example", 1)[1]
    transcript = example.split("```text\n", 1)[1].split("```", 1)[0]
    alice = await register(http, f"alice{uuid.uuid4().hex[:8]}")
    await create_room(http, alice, "lobby")

    def comparable(event: dict[str, Any]) -> dict[str, Any]:  # the clock and the server's id
        for message in event.get("messages", []):
            del message["ts"]
        return {key: value for key, value in event.items() if key not in ("ts", "server_id")}

    async with connect() as a:
        for line in transcript.splitlines():
            line = line.replace("TOKEN", alice.token).replace('"alice"', f'"{alice.name}"')
            if line.startswith("> "):
                await a.ws.send_message(line[2:])
            elif line.startswith("< "):
                expected = json.loads(line[2:])
                assert comparable(await a.recv()) == comparable(expected), line
        assert sum(line.startswith("< ") for line in transcript.splitlines()) >= 10


# helpers ---------------------------------------------------------------------------------------


@asynccontextmanager
async def _connect(
    server: RunningServer, token: str | None, resume: dict[str, int] | None = None
) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket(server.ws) as ws:
        if token is not None:
            hello: dict[str, object] = {"type": "hello", "token": token}
            if resume is not None:
                hello["resume"] = resume
            await ws.send_message(json.dumps(hello))
        yield ws


async def _assert_closed_with(
    ws: WebSocketConnection, code: int, reason: str | None = None
) -> None:
    with trio.fail_after(STEP):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            assert closed.reason.code == code, closed.reason
            assert reason is None or closed.reason.reason == reason, closed.reason


async def _nothing_but_pong(peer: Peer) -> None:
    """Everything queued for `peer` so far has arrived: no `message` was among it."""
    await peer.send(type="ping", ref="flush")
    pong = await peer.expect("pong")  # a `message` before it fails here
    assert pong["ref"] == "flush"


async def test_leave_on_one_connection_unsubscribes_the_users_others(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = await register(http), await register(http)
    await create_room(http, alice, "lobby")
    await join_room(http, bob, "lobby")
    async with connect(alice) as a, connect(bob) as b1, connect(bob) as b2:
        await b1.send(type="leave", room="lobby", ref="l1")
        assert (await b1.expect("left")) == {"type": "left", "room": "lobby", "ref": "l1"}
        assert (await b2.expect("left")) == {"type": "left", "room": "lobby"}  # no ref: not asked
        await a.send(type="send", room="lobby", text="bob left", client_id="c1")
        await a.expect("ack", skip=("presence", "message"))
        await _nothing_but_pong(b1)
        await _nothing_but_pong(b2)
        await b2.send(type="send", room="lobby", text="still here?", ref="s")
        error = await b2.expect("error")
        assert (error["code"], error["ref"]) == ("not_member", "s")


async def test_join_on_one_connection_subscribes_the_users_others(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = await register(http), await register(http)
    await create_room(http, alice, "lobby")
    async with connect(alice) as a, connect(bob) as b1, connect(bob) as b2:
        await a.send(type="send", room="lobby", text="before", client_id="c0")
        await a.expect("ack", skip=("presence", "message"))
        await b1.send(type="join", room="lobby", ref="j1")
        joined = await b1.expect("joined")
        assert (joined["last_seq"], joined["ref"]) == (1, "j1")
        other = await b2.expect("joined")
        assert (other["room"], other["last_seq"], "ref" in other) == ("lobby", 1, False)
        assert bob.name in other["online"]
        await a.send(type="send", room="lobby", text="welcome bob", client_id="c1")
        for peer in (b1, b2):
            got = await peer.expect("message")
            assert (got["seq"], got["text"]) == (2, "welcome bob")


async def test_http_join_and_leave_reach_the_users_open_connections(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = await register(http), await register(http)
    await create_room(http, alice, "lobby")
    auth = {"Authorization": f"Bearer {bob.token}"}
    async with connect(alice) as a, connect(bob) as b:
        response = await http.post("/api/rooms/lobby/join", headers=auth)
        assert response.status_code == 200
        joined = await b.expect("joined")
        assert (joined["room"], joined["last_seq"], "ref" in joined) == ("lobby", 0, False)
        await a.send(type="send", room="lobby", text="hi bob", client_id="c1")
        assert (await b.expect("message"))["text"] == "hi bob"

        response = await http.post("/api/rooms/lobby/leave", headers=auth)
        assert response.status_code == 200
        assert (await b.expect("left")) == {"type": "left", "room": "lobby"}
        await a.send(type="send", room="lobby", text="bye bob", client_id="c2")
        await a.expect("ack", skip=("presence", "message"))
        await _nothing_but_pong(b)

"""/readyz: 503 with a reason when the database is not writable or the writer falls behind."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
import trio

from server.fanout.hub import RoomHub
from server.ops import health
from server.ops.health import Readiness
from server.persist.writer import MessageWriter, PendingSend
from server.transport.flusher import Flusher
from storage import NewMessage, open_store

from ..conftest import STEP, make_config, running_server


async def _ready(http: httpx.AsyncClient) -> tuple[int, str | None]:
    response = await http.get("/readyz")
    return response.status_code, response.json().get("reason")


async def _until_ready_is(http: httpx.AsyncClient, status: int) -> str | None:
    with trio.fail_after(STEP):
        while True:
            code, reason = await _ready(http)
            if code == status:
                return reason
            await trio.sleep(0.02)


async def test_readyz_is_503_while_another_process_holds_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "PROBE_BUSY_TIMEOUT", 0.2)
    config = make_config(tmp_path, db_probe_interval=0.05)
    async with (
        running_server(config) as server,
        httpx.AsyncClient(base_url=server.http, timeout=STEP) as http,
    ):
        assert await _ready(http) == (200, None)
        hog = sqlite3.connect(config.storage.db_path, isolation_level=None)
        try:
            hog.execute("BEGIN IMMEDIATE")
            reason = await _until_ready_is(http, 503)
            assert reason is not None
            assert reason.startswith("database not writable: OperationalError: database is locked")
            hog.execute("ROLLBACK")
        finally:
            hog.close()
        assert await _until_ready_is(http, 200) is None


async def test_a_failed_commit_makes_the_server_unready_until_writes_succeed(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "x.db", scrypt_n=2**10)
    await store.open()
    user = await store.create_user("u", "correct horse")
    await store.create_room("r", user.id)
    writer = MessageWriter(store, RoomHub(Flusher()), queue_size=10, max_batch=10)
    readiness = Readiness(store, writer, 10, lambda: False, probe_interval=0.01)
    message = NewMessage("r", user.id, "u", "hi", None)
    await writer.commit_batch([PendingSend(message, None, None)])
    assert readiness.reason() is None
    await store.aclose()  # from now on every commit fails
    await writer.commit_batch([PendingSend(message, None, None)])
    reason = readiness.reason()
    assert reason is not None and reason.startswith("database not writable: the store is")
    # The periodic probe (run while the writer is idle) succeeding on the file clears it.
    await readiness.probe()
    assert readiness.reason() is None


async def test_a_writer_queue_90_percent_full_is_unready() -> None:
    writer = MessageWriter(None, RoomHub(Flusher()), queue_size=10, max_batch=10)  # type: ignore[arg-type]
    readiness = Readiness(None, writer, 10, lambda: False, probe_interval=60)  # type: ignore[arg-type]
    for i in range(9):
        assert readiness.reason() is None
        await writer.submit(PendingSend(NewMessage("r", 1, "u", str(i), None), None, None))
    assert readiness.reason() == "writer not keeping up: 9 of 10 queued"


def test_draining_wins_over_everything() -> None:
    writer = MessageWriter(None, None, queue_size=1, max_batch=1)  # type: ignore[arg-type]
    readiness = Readiness(None, writer, 1, lambda: True, probe_interval=60)  # type: ignore[arg-type]
    assert readiness.reason() == "shutting down"

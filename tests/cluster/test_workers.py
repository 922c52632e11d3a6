"""`hibiki serve --workers 3` as real processes: one port served by three workers (SO_REUSEPORT),
a killed worker restarted while the port keeps serving, SIGTERM drained by every worker, and
systemd told READY only once all three listen.

The supervisor runs in its own session, so whatever happens every process of the tree is killed
at the end (`os.killpg`). Without the Redis bus, `HIBIKI_WORKERS_WITHOUT_REDIS=1` lets the
supervisor start (unsupported outside tests: a message reaches only its own worker's sockets).
SQLite only: `--workers` is processes of one host sharing one file (`cluster_db` is not used).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed
from trio_websocket import WebSocketConnection as Ws

from client import open_websocket
from protocol import CloseCode
from server.ops.supervisor import STOP_MARGIN

from ..conftest import STEP, Account, register

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3
DRAIN_TIMEOUT = 4.0
WORKER_IDS = {f"sup-w{i}" for i in range(1, WORKERS + 1)}
Record = dict[str, Any]


class Supervised:
    """The supervisor process and its JSON log lines (its own and its workers', one stderr)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.records: list[Record] = []
        self.port = 0
        self._changed = trio.Event()

    async def read_log(self) -> None:
        assert self.process.stderr is not None
        pending = b""
        while chunk := await self.process.stderr.receive_some():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            self.records.extend(json.loads(line) for line in lines if line.startswith(b"{"))
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, match: Callable[[Record], bool], after: int = 0) -> Record:
        """The first record from index `after` on that `match`es (waiting for it to come)."""
        with trio.fail_after(STEP * 3):
            while True:
                for record in self.records[after:]:
                    if match(record):
                        return record
                await self._changed.wait()

    def worker_pids(self) -> set[int]:
        # Per thread: trio starts processes from a worker thread.
        tasks = Path(f"/proc/{self.process.pid}/task").iterdir()
        return {int(pid) for task in tasks for pid in (task / "children").read_text().split()}


@asynccontextmanager
async def supervised(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[Supervised]:
    """`hibiki serve --workers 3` on an ephemeral port, once its "listening on" line is out."""
    cmd = [sys.executable, "-m", "server.cli", "serve", "--workers", str(WORKERS)]
    cmd += ["--port", "0", "--db", str(tmp_path / "hibiki.db"), "--server-id", "sup"]
    cmd += ["--rate-limit", "0", "--log-format", "json", "--drain-timeout", str(DRAIN_TIMEOUT)]
    environment = os.environ | {"HIBIKI_WORKERS_WITHOUT_REDIS": "1"} | (env or {})
    process = await trio.lowlevel.open_process(
        [*cmd, *args], cwd=ROOT, stderr=subprocess.PIPE, env=environment, start_new_session=True
    )
    try:
        async with trio.open_nursery() as nursery:
            sup = Supervised(process)
            nursery.start_soon(sup.read_log)
            ready = await sup.wait_for(_listening("sup"))
            sup.port = ready["port"]
            try:
                yield sup
            finally:
                nursery.cancel_scope.cancel()  # the workers hold stderr open: stop reading
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            # Workers outlive a killed supervisor: the session's group takes them too.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def _listening(server_id: str) -> Callable[[Record], bool]:
    return lambda r: "listening on" in r["msg"] and r.get("server_id") == server_id


async def _welcomed(stack: AsyncExitStack, port: int, account: Account) -> tuple[Ws, str]:
    """A new WebSocket that said hello (closed with `stack`), and its worker's `server_id`."""
    # Entered outside any cancel scope the stack outlives (trio requires scopes to nest).
    ws = await stack.enter_async_context(open_websocket(f"ws://127.0.0.1:{port}/ws"))
    with trio.fail_after(STEP):
        await ws.send_message(json.dumps({"type": "hello", "token": account.token}))
        welcome = json.loads(await ws.get_message())
    assert welcome["type"] == "welcome", welcome
    return ws, str(welcome["server_id"])


async def _worker_ids_seen(port: int, account: Account, tries: int = 40) -> set[str]:
    """Which workers answer `tries` fresh connections (the kernel hashes each to one)."""
    seen: set[str] = set()
    for _ in range(tries):
        async with open_websocket(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send_message(json.dumps({"type": "hello", "token": account.token}))
            seen.add(json.loads(await ws.get_message())["server_id"])
        if seen == WORKER_IDS:
            break
    return seen


async def _account(port: int) -> Account:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=STEP) as http:
        return await register(http)


async def test_three_workers_serve_http_and_websocket_on_one_port(tmp_path: Path) -> None:
    async with supervised(tmp_path) as sup:
        assert len(sup.worker_pids()) == WORKERS
        with trio.fail_after(STEP * 3):
            account = await _account(sup.port)
            for _ in range(5):  # each request on a new connection: any worker answers
                async with httpx.AsyncClient(timeout=STEP) as http:
                    health = await http.get(f"http://127.0.0.1:{sup.port}/healthz")
                assert health.status_code == 200
                assert health.json()["server_id"] in WORKER_IDS
            assert await _worker_ids_seen(sup.port, account) == WORKER_IDS


async def test_a_killed_worker_is_restarted_and_the_port_keeps_serving(tmp_path: Path) -> None:
    async with supervised(tmp_path) as sup:
        account = await _account(sup.port)
        before = sup.worker_pids()
        victim = min(before)
        mark = len(sup.records)
        os.kill(victim, signal.SIGKILL)
        died = await sup.wait_for(lambda r: r["msg"] == "worker died: restarting", mark)
        assert died["pid"] == victim
        assert died["status"] == -signal.SIGKILL
        assert died["restarts"] == 1
        with trio.fail_after(STEP):  # served by the others meanwhile
            async with httpx.AsyncClient(timeout=STEP) as http:
                health = await http.get(f"http://127.0.0.1:{sup.port}/healthz")
            assert health.status_code == 200
        await sup.wait_for(lambda r: r["msg"] == "worker ready again", mark)
        after = sup.worker_pids()
        assert len(after) == WORKERS
        assert victim not in after
        with trio.fail_after(STEP * 3):
            assert await _worker_ids_seen(sup.port, account) == WORKER_IDS


async def test_sigterm_drains_every_worker_then_the_supervisor_exits_0(tmp_path: Path) -> None:
    async with supervised(tmp_path) as sup:
        account = await _account(sup.port)
        async with AsyncExitStack() as stack:
            sockets: list[tuple[str, Ws]] = []
            for _ in range(60):
                ws, server_id = await _welcomed(stack, sup.port, account)
                sockets.append((server_id, ws))
                if {server_id for server_id, _ in sockets} == WORKER_IDS:  # one on each
                    break
            codes: list[tuple[str, int]] = []

            async def closed(server_id: str, ws: Ws) -> None:
                try:
                    while True:
                        await ws.get_message()
                except ConnectionClosed as exc:
                    codes.append((server_id, exc.reason.code))

            await _drained(sup, sockets, closed)
        assert sorted(codes) == sorted((i, CloseCode.GOING_AWAY) for i, _ in sockets)
        stopped = [r.get("server_id") for r in sup.records if r["msg"] == "stopped"]
        assert sorted(stopped) == sorted(WORKER_IDS)


async def _drained(
    sup: Supervised,
    sockets: list[tuple[str, Ws]],
    closed: Callable[[str, Ws], Awaitable[None]],
) -> None:
    """SIGTERM to the supervisor alone: every socket sees its close and it exits 0 in time."""
    stopped_at = trio.current_time()
    with trio.fail_after(DRAIN_TIMEOUT + STOP_MARGIN + STEP):  # the supervisor's bound, and slack
        async with trio.open_nursery() as nursery:
            for server_id, ws in sockets:
                nursery.start_soon(closed, server_id, ws)
            sup.process.send_signal(signal.SIGTERM)
        assert await sup.process.wait() == 0
    assert trio.current_time() - stopped_at < DRAIN_TIMEOUT + STOP_MARGIN


def _listening_sockets(port: int) -> int:
    """Sockets in LISTEN state on `port` (127.0.0.1), from the kernel's table."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    local = f"0100007F:{port:04X}"
    return sum(1 for line in lines if line.split()[1] == local and line.split()[3] == "0A")


async def test_systemd_is_told_ready_only_once_every_worker_listens(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="hb-") as directory:
        path = os.path.join(directory, "notify")
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            await notify.bind(path)
            async with supervised(tmp_path, env={"NOTIFY_SOCKET": path}) as sup:
                with trio.fail_after(STEP):
                    first = (await notify.recv(4096)).decode().splitlines()
                # The first word from the supervisor, with the three already listening.
                assert "READY=1" in first
                assert _listening_sockets(sup.port) == WORKERS
                assert f"STATUS=listening on 127.0.0.1:{sup.port} ({WORKERS} workers)" in first
                sup.process.send_signal(signal.SIGTERM)
                with trio.fail_after(STEP):
                    assert "STOPPING=1" in (await notify.recv(4096)).decode().splitlines()
                    assert await sup.process.wait() == 0


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "HIBIKI_WORKERS_WITHOUT_REDIS"}
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", *args],
        cwd=ROOT,
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=STEP * 3,
        check=False,
    )


def test_workers_without_redis_are_refused_with_one_line(tmp_path: Path) -> None:
    result = _run_cli("--workers", "3", "--port", "0", "--db", str(tmp_path / "h.db"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "hibiki: --workers > 1 needs --redis URL (a shared bus):"
        " each worker would deliver only its own"
    ]
    assert not (tmp_path / "h.db").exists()


@pytest.mark.parametrize("workers", ["0", "65"])
def test_workers_out_of_range_is_a_config_error(tmp_path: Path, workers: str) -> None:
    result = _run_cli("--workers", workers, "--db", str(tmp_path / "h.db"))
    assert result.returncode == 2
    assert "workers: must be 1 to 64" in result.stderr


def test_a_worker_that_cannot_start_fails_the_supervisor(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "h.db"
    env = {"HIBIKI_WORKERS_WITHOUT_REDIS": "1"}
    result = _run_cli("--workers", "2", "--port", "0", "--db", str(missing), env=env)
    assert result.returncode == 1
    assert "exited with status 1 while starting" in result.stderr.splitlines()[-1]

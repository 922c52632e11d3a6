"""Light load through a real server: one message at a time to N receivers over TCP, measured
in the server process as a whole (event loop, SQLite writer thread, kernel time for CPU).

A `hibiki serve` process (optionally under callgrind) gets two accounts, one room, N receiver
connections and one sender. After a warm-up the sender sends one message, waits for its ack and
for every receiver's copy, then sends the next: nothing is in flight to batch. The server's CPU
(utime + stime of every thread, /proc) or its instructions (callgrind, zeroed after the warm-up
and dumped after the run) are divided by the messages sent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

ROOT = Path(__file__).resolve().parents[1]
_LISTENING = re.compile(rb"listening on [0-9.]+:(\d+)")
_TOTALS = re.compile(r"^(?:totals|summary):\s+(\d+)", re.M)


@dataclass
class LightServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    callgrind_out: Path | None
    keep_dump: Path | None = None


def start(workdir: Path, *, callgrind: bool, timeout: float) -> LightServer:
    """`hibiki serve` on a fresh SQLite file (synchronous FULL, no rate limit)."""
    command = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
    command += ["--db", str(workdir / "hibiki.db"), "--rate-limit", "0", "--synchronous", "FULL"]
    out = None
    if callgrind:
        out = workdir / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command]
    log = workdir / "server.log"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    if callgrind:  # ~50x slower: a commit on the loop would pass the stall bound and pause them
        env.setdefault("HIBIKI_SQLITE_LOOP_COMMIT_STALL", "10")
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        found = _LISTENING.search(log.read_bytes())
        if found:
            return LightServer(process, int(found.group(1)), log, out)
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise SystemExit(f"the server did not start:\n{log.read_text(errors='replace')[-2000:]}")


def server_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _account(http: httpx.AsyncClient, name: str) -> str:
    response = await http.post("/api/register", json={"name": name, "password": "light-load-pw"})
    response.raise_for_status()
    token: str = response.json()["token"]
    return token


async def _hello(url: str, token: str, nursery: trio.Nursery) -> WebSocketConnection:
    ws: WebSocketConnection = await nursery.start(_hold, url)
    await ws.send_message(json.dumps({"type": "hello", "token": token}))
    while json.loads(await ws.get_message())["type"] != "welcome":
        pass
    return ws


async def _hold(url: str, task_status: trio.TaskStatus[WebSocketConnection]) -> None:
    async with open_websocket_url(url) as ws:
        task_status.started(ws)
        await trio.sleep_forever()


async def _next(ws: WebSocketConnection, kind: str) -> None:
    while json.loads(await ws.get_message())["type"] != kind:
        pass


async def _one_message(sender: WebSocketConnection, receivers: list[WebSocketConnection]) -> None:
    """Send one message; return once it is acked and every receiver has it (a loss: timeout)."""
    with trio.fail_after(120):  # generous: the server may run under callgrind
        await _one_message_now(sender, receivers)


async def _one_message_now(
    sender: WebSocketConnection, receivers: list[WebSocketConnection]
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_next, sender, "ack")
        for ws in receivers:
            nursery.start_soon(_next, ws, "message")
        await sender.send_message(
            json.dumps({"type": "send", "room": "light", "text": "x" * 60, "client_id": None})
        )


async def drive(server: LightServer, receivers: int, warmup: int, messages: int) -> float:
    """Returns the server's CPU seconds (or with callgrind its instructions) per message."""
    base = f"http://127.0.0.1:{server.port}"
    url = f"ws://127.0.0.1:{server.port}/ws"
    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        sender_token, reader_token = await _account(http, "sender"), await _account(http, "reader")
        for token in (sender_token, reader_token):
            auth = {"Authorization": f"Bearer {token}"}
            if token is sender_token:
                response = await http.post("/api/rooms", json={"name": "light"}, headers=auth)
            else:
                response = await http.post("/api/rooms/light/join", headers=auth)
            response.raise_for_status()
    async with trio.open_nursery() as nursery:
        sender = await _hello(url, sender_token, nursery)
        readers = [await _hello(url, reader_token, nursery) for _ in range(receivers)]
        for _ in range(warmup):
            await _one_message(sender, readers)
        before = _mark(server, start=True)
        for _ in range(messages):
            await _one_message(sender, readers)
        per_message = (_mark(server, start=False) - before) / messages
        nursery.cancel_scope.cancel()
    return per_message


def _mark(server: LightServer, *, start: bool) -> float:
    """CPU seconds so far; or under callgrind: zero the counts (start), or the count since."""
    if server.callgrind_out is None:
        return server_cpu_seconds(server.process.pid)
    return float(_callgrind(server, "--zero" if start else "--dump"))


def _callgrind(server: LightServer, action: str) -> int:
    """`--zero` returns 0; `--dump` returns the instructions counted since the zero."""
    assert server.callgrind_out is not None
    existing = set(server.callgrind_out.parent.glob("callgrind.out*"))
    pid = str(server.process.pid)
    subprocess.run(["callgrind_control", action, pid], check=True, capture_output=True)
    if action == "--zero":
        return 0
    (dump,) = set(server.callgrind_out.parent.glob("callgrind.out*")) - existing
    if server.keep_dump is not None:  # for callgrind_annotate: where the instructions went
        shutil.copyfile(dump, server.keep_dump)
    found = _TOTALS.search(dump.read_text())
    if found is None:
        raise SystemExit(f"no totals in {dump}")
    return int(found.group(1))


def measure(
    receivers: int, warmup: int, messages: int, *, callgrind: bool, keep_dump: Path | None = None
) -> float:
    with tempfile.TemporaryDirectory(prefix="hibiki-light-") as tmp:
        server = start(Path(tmp), callgrind=callgrind, timeout=600 if callgrind else 30)
        server.keep_dump = keep_dump
        try:
            return trio.run(drive, server, receivers, warmup, messages)
        finally:
            server.process.terminate()
            server.process.wait(120)

"""Start and stop the servers the benchmarks compare, each as its own process (optionally pinned
to one CPU with `taskset`), on 127.0.0.1 and an ephemeral port read from its log line
`listening on HOST:PORT`."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _loadworkers import FIREHOSE_JS, node_binary

SCRIPTS = Path(__file__).resolve().parent
PEERS = SCRIPTS / "bench_peers"
KINDS = ("hibiki", "websockets", "socketio", "firehose")
_LISTENING = re.compile(rb"listening on ([0-9.]+):(\d+)")


class ServerStartError(RuntimeError):
    """The server exited or did not say it was listening in time; the message has its log."""


def _hibiki_command(db: Path, synchronous: str) -> list[str]:
    exe = Path(sys.executable).parent / "hibiki"
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "server.cli"]
    return [
        *base,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--db",
        str(db),
        "--rate-limit",
        "0",
        # The load puts up to 16,000 connections on each 127.0.0.x source address.
        "--max-connections-per-address",
        "0",
        "--max-pending-per-address",
        "0",
        "--synchronous",
        synchronous,
    ]


def server_command(kind: str, workdir: Path, *, synchronous: str = "FULL") -> list[str]:
    if kind == "hibiki":
        return _hibiki_command(workdir / "hibiki.db", synchronous)
    if kind == "websockets":
        return [sys.executable, str(PEERS / "ws_broadcast.py"), "--port", "0"]
    if kind == "socketio":
        return [sys.executable, str(PEERS / "sio_server.py"), "--port", "0"]
    if kind == "firehose":
        node = node_binary()
        if node is None:
            raise ServerStartError("node is required for the firehose")
        return [node, str(FIREHOSE_JS), "0"]
    raise ValueError(f"unknown server kind {kind!r} (one of {', '.join(KINDS)})")


@dataclass
class ServerProcess:
    kind: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (hibiki drains and closes its store), then SIGKILL after `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_server(
    kind: str,
    workdir: Path,
    *,
    cpu: int | None = None,
    synchronous: str = "FULL",
    timeout: float = 30.0,
) -> ServerProcess:
    """Start a `kind` server with its files and log in `workdir`; wait until it listens."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = server_command(kind, workdir, synchronous=synchronous)
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    log = workdir / f"{kind}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _LISTENING.search(log.read_bytes())
        if match:
            return ServerProcess(kind, process, int(match.group(2)), log)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait(5)
    tail = log.read_bytes()[-2000:].decode(errors="replace")
    raise ServerStartError(f"{kind} did not start listening:\n{tail}")

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
NODE_SIO = PEERS / "node_sio"
KINDS = ("hibiki", "hibiki-pg", "websockets", "socketio", "node-socketio", "firehose")
# The wire dialect of scripts/loadgen_node/protocols.js each kind speaks.
DIALECTS = {"node-socketio": "socketio", "hibiki-pg": "hibiki"}
_LISTENING = re.compile(rb"listening on ([0-9.]+):(\d+)")
# With --workers, each worker says it listens before the supervisor has all of them ready (and a
# worker failing while starting stops them all): only the supervisor's line, the one that counts
# its workers, means the server is up.
_ALL_WORKERS_LISTENING = re.compile(rb'listening on ([0-9.]+):(\d+)"[^\n]*"workers": \d+')


class ServerStartError(RuntimeError):
    """The server exited or did not say it was listening in time; the message has its log."""


def dialect(kind: str) -> str:
    """The load generator's `--protocol` for a server kind."""
    return DIALECTS.get(kind, kind)


def _hibiki_base() -> list[str]:
    exe = Path(sys.executable).parent / "hibiki"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "server.cli"]


def hibiki_supports_redis() -> bool:
    """Whether `hibiki serve` has the `--redis` flag (the Redis bus of issue #11)."""
    done = subprocess.run(
        [*_hibiki_base(), "serve", "--help"], capture_output=True, text=True, check=False
    )
    # The option's own line, not a mention of it in another option's help.
    return re.search(r"^\s+--redis\b", done.stdout, re.M) is not None


def node_sio_missing() -> str | None:
    """Why the Node Socket.IO peer cannot start (node or its npm modules absent), or None."""
    if node_binary() is None:
        return "node (Node.js >= 18) is not installed"
    if not (NODE_SIO / "node_modules" / "socket.io").is_dir():
        return f"the Node Socket.IO peer's modules are not installed: npm ci --prefix {NODE_SIO}"
    return None


def _hibiki_command(db: Path | str, synchronous: str) -> list[str]:
    return [
        *_hibiki_base(),
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


def server_command(
    kind: str,
    workdir: Path,
    *,
    synchronous: str = "FULL",
    redis_url: str | None = None,
    db: Path | str | None = None,
) -> list[str]:
    """The command line of a `kind` server; with `redis_url`, one process of a Redis cluster
    (hibiki: every process given the same `db` file). `hibiki-pg` is hibiki on the PostgreSQL
    database `db` (a postgresql:// URL)."""
    via_redis = ["--redis", redis_url] if redis_url else []
    if kind == "hibiki":
        return [*_hibiki_command(db or workdir / "hibiki.db", synchronous), *via_redis]
    if kind == "hibiki-pg":
        if not isinstance(db, str) or not db.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"hibiki-pg needs a postgresql:// database, not {db!r}")
        return [*_hibiki_command(db, synchronous), *via_redis]
    if redis_url and kind not in ("socketio", "node-socketio"):
        raise ValueError(f"{kind} has no Redis mode")
    if kind == "websockets":
        return [sys.executable, str(PEERS / "ws_broadcast.py"), "--port", "0"]
    if kind == "socketio":
        return [sys.executable, str(PEERS / "sio_server.py"), "--port", "0", *via_redis]
    if kind == "node-socketio":
        missing = node_sio_missing()
        if missing is not None:
            raise ServerStartError(missing)
        return [str(node_binary()), str(NODE_SIO / "server.js"), "--port", "0", *via_redis]
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
        stop_process(self.process, timeout)


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def start_server(
    kind: str,
    workdir: Path,
    *,
    cpu: int | None = None,
    synchronous: str = "FULL",
    timeout: float = 30.0,
    redis_url: str | None = None,
    db: Path | str | None = None,
    extra_args: tuple[str, ...] = (),
) -> ServerProcess:
    """Start a `kind` server with its files and log in `workdir`; wait until it listens.

    `redis_url` (and for hibiki a shared `db`) makes it one process of several serving the same
    rooms; `extra_args` go at the end of its command line."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = server_command(kind, workdir, synchronous=synchronous, redis_url=redis_url, db=db)
    command += extra_args
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    log = workdir / f"{kind}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    ready = _ALL_WORKERS_LISTENING if "--workers" in extra_args else _LISTENING
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = ready.search(log.read_bytes())
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

"""A private redis-server for one benchmark run: its own free port on 127.0.0.1, nothing saved,
started and stopped by the script, so its pid (for its CPU) is known and no other user's Redis
is touched or counted."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from _benchservers import stop_process


class RedisStartError(RuntimeError):
    """redis-server is missing, exited, or did not answer PING in time; the message says which."""


def redis_server_binary() -> str | None:
    """The `redis-server` executable, or None when Redis is not installed."""
    return shutil.which("redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ping(port: int, timeout: float = 1.0) -> bool:
    """True if a Redis on 127.0.0.1:`port` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_pid(port: int, timeout: float = 2.0) -> int | None:
    """The pid of the redis-server on 127.0.0.1:`port` (`process_id` of INFO server), or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"INFO server\r\n")
            data = b""
            while b"process_id:" not in data or not data.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    for line in data.split(b"\r\n"):
        if line.startswith(b"process_id:"):
            return int(line.split(b":", 1)[1])
    return None


@dataclass
class RedisProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (nothing to save: persistence is off), then SIGKILL after `timeout`."""
        stop_process(self.process, timeout)


def start_redis(
    workdir: Path,
    *,
    cpu: int | None = None,
    unlimited_pubsub: bool = False,
    timeout: float = 15.0,
) -> RedisProcess:
    """Start redis-server in `workdir` on a free port (no RDB, no AOF); wait until it answers.

    `unlimited_pubsub` lifts the pub/sub client output buffer limit (32 MB by default), so a
    subscriber that falls behind a flood is not disconnected mid-measurement.
    """
    binary = redis_server_binary()
    if binary is None:
        raise RedisStartError("redis-server is not installed (apt-get install redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"]
    if unlimited_pubsub:
        command += ["--client-output-buffer-limit", "pubsub 0 0 0"]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    log = workdir / "redis.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = RedisProcess(process, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(port):
            return server
        if process.poll() is not None:
            break
        time.sleep(0.05)
    server.stop()
    tail = log.read_bytes()[-2000:].decode(errors="replace")
    raise RedisStartError(f"redis-server on port {port} did not answer PING:\n{tail}")

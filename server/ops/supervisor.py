"""`hibiki serve --workers N`: N worker processes share one port (SO_REUSEPORT) and one SQLite
file, under this supervisor.

    supervisor (trio.run)
    ├── port         picked first when the port is 0 (a bound SO_REUSEPORT socket, kept open)
    ├── readiness    one datagram socket per worker: each worker's sd_notify goes here, not to
    │                systemd, and READY=1 reaches systemd once all N are listening
    ├── worker i     `python -m server.cli <argv> --port P --server-id ID-wi`, restarted with
    │                backoff when it dies (a failure before the first READY is fatal instead)
    └── signals      SIGTERM/SIGINT forwarded to every worker; their drains are awaited for
                     drain_timeout + STOP_MARGIN, then any left is killed; exit 0

The kernel spreads new connections over the workers' listening sockets; a WebSocket stays on the
worker that accepted it, so cross-worker delivery needs the Redis bus (`--redis`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence

import trio

from server.config import Config
from server.ops import sdnotify

_log = logging.getLogger(__name__)

WORKER_ENV = "HIBIKI_WORKER"  # "i/N" in a worker's environment: it is worker i of N
WITHOUT_REDIS_ENV = "HIBIKI_WORKERS_WITHOUT_REDIS"  # "1": tests only, unsupported (no bus)
INTERNAL_ENV = frozenset({WORKER_ENV, WITHOUT_REDIS_ENV})  # not settings: config ignores them
STOP_MARGIN = 5.0  # beyond drain_timeout, for a worker to close its store and exit
RESTART_BACKOFF = (0.5, 30.0)  # first and longest wait before restarting a dead worker
STABLE_AFTER = 10.0  # a worker that ran this long restarts after the first wait again


class WorkerStartFailed(Exception):
    """A worker exited before all workers were first ready (bad config, database, port)."""


def refusal(config: Config, env: dict[str, str]) -> str | None:
    """Why `--workers` > 1 is refused, or None: without a shared bus a message reaches only the
    connections of the worker that stored it."""
    # `[bus] redis_url` (flag --redis) comes with the Redis bus; until then there is none.
    redis_url: str = getattr(getattr(config, "bus", None), "redis_url", "")
    if config.server.workers <= 1 or redis_url or env.get(WITHOUT_REDIS_ENV) == "1":
        return None
    return "--workers > 1 needs --redis URL (a shared bus): each worker would deliver only its own"


class Supervisor:
    """Runs and watches the workers; `restarts` counts the deaths it recovered from."""

    def __init__(self, config: Config, argv: Sequence[str]) -> None:
        self._config = config
        self._argv = list(argv)
        self._count = config.server.workers
        self._ready: set[int] = set()
        self._all_ready = trio.Event()
        self._stopping = trio.Event()
        self._processes: dict[int, trio.Process] = {}
        self.restarts = 0

    async def run(self, stop: trio.Event) -> None:
        """Serve until `stop`, then drain every worker. Raises `WorkerStartFailed`."""
        with (
            _reserved_port(self._config) as port,
            tempfile.TemporaryDirectory(prefix="hibiki-") as directory,
        ):
            try:
                async with trio.open_nursery() as nursery:
                    for i in range(1, self._count + 1):
                        path = os.path.join(directory, f"w{i}")
                        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                        await sock.bind(path)
                        nursery.start_soon(self._readiness, i, sock, port)
                        nursery.start_soon(self._keep_running, i, port, path)
                    await stop.wait()
                    await self._stop()
                    nursery.cancel_scope.cancel()
            finally:  # a failed start, or the supervisor itself failing: leave no worker behind
                with trio.CancelScope(shield=True):
                    await self._kill_remaining()

    async def _stop(self) -> None:
        self._stopping.set()
        sdnotify.notify("STOPPING=1", f"STATUS=draining {len(self._processes)} workers")
        _log.info("stopping workers", extra={"workers": len(self._processes)})
        for process in self._processes.values():
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self._config.timeouts.drain_timeout + STOP_MARGIN):
            for process in list(self._processes.values()):
                await process.wait()
        await self._kill_remaining()
        _log.info("workers stopped", extra={"restarts": self.restarts})

    async def _kill_remaining(self) -> None:
        for i, process in self._processes.items():
            if process.returncode is None:
                _log.warning("worker killed", extra={"worker": i, "pid": process.pid})
                process.kill()
                await process.wait()

    async def _keep_running(self, i: int, port: int, notify_path: str) -> None:
        backoff = RESTART_BACKOFF[0]
        while not self._stopping.is_set():
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                self._command(i, port), env=self._environment(i, notify_path)
            )
            self._processes[i] = process
            code = await process.wait()
            self._ready.discard(i)
            if self._stopping.is_set():
                return
            if not self._all_ready.is_set():
                raise WorkerStartFailed(f"worker {i} exited with status {code} while starting")
            if trio.current_time() - started > STABLE_AFTER:
                backoff = RESTART_BACKOFF[0]
            self.restarts += 1
            _log.warning(
                "worker died: restarting",
                extra={
                    "worker": i,
                    "pid": process.pid,
                    "status": code,
                    "restarts": self.restarts,
                    "backoff_s": backoff,
                },
            )
            sdnotify.notify(f"STATUS=worker {i} restarting; {self.restarts} restarts")
            with trio.move_on_after(backoff):
                await self._stopping.wait()
            backoff = min(backoff * 2, RESTART_BACKOFF[1])

    async def _readiness(self, i: int, sock: trio.socket.SocketType, port: int) -> None:
        """Reads worker i's sd_notify datagrams; tells systemd READY once all workers are."""
        with sock:
            while True:
                data = await sock.recv(4096)
                if b"READY=1" not in data.split(b"\n"):
                    continue
                self._ready.add(i)
                if self._all_ready.is_set():
                    _log.info("worker ready again", extra={"worker": i})
                    continue
                if len(self._ready) == self._count:
                    self._all_ready.set()
                    self._announce(port)

    def _announce(self, port: int) -> None:
        host, server_id = self._config.server.host, self._config.server.server_id
        _log.info(
            "hibiki %s listening on %s:%d",
            server_id,
            host,
            port,
            extra={"server_id": server_id, "host": host, "port": port, "workers": self._count},
        )
        sdnotify.notify("READY=1", f"STATUS=listening on {host}:{port} ({self._count} workers)")

    def _command(self, i: int, port: int) -> list[str]:
        server_id = f"{self._config.server.server_id}-w{i}"
        # Later flags win: every worker binds the supervisor's port under its own name.
        extra = ["--port", str(port), "--server-id", server_id]
        return [sys.executable, "-m", "server.cli", *self._argv, *extra]

    def _environment(self, i: int, notify_path: str) -> dict[str, str]:
        # NOTIFY_SOCKET points at the supervisor: a worker must not tell systemd READY itself.
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        env[WORKER_ENV] = f"{i}/{self._count}"
        return env


@contextlib.contextmanager
def _reserved_port(config: Config) -> Iterator[int]:
    """The port every worker binds: the configured one, or for port 0 a free one, held by a
    bound (not listening) SO_REUSEPORT socket until the supervisor exits, so that nothing else
    takes it while a worker restarts."""
    if config.server.port:
        yield config.server.port
        return
    family, _, _, _, address = socket.getaddrinfo(config.server.host, 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        yield int(sock.getsockname()[1])

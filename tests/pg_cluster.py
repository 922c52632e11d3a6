"""A real PostgreSQL 15 primary and streaming replica in a temp dir, for replica tests.

`PgCluster.started()` runs `initdb` for a primary (trust auth, `wal_level=replica`, listening on
127.0.0.1 at a free port, its unix socket in the temp dir), starts it with `pg_ctl`, clones a
streaming replica from it with `pg_basebackup -R` and starts that on another free port. Every
server program runs as the `postgres` OS user (`runuser -u postgres --`; the temp dir is chowned
to it). Leaving the block stops both servers (immediate mode) and removes the temp dir, however
the block ends. It takes about 4 s on this machine.

`missing_reason()` says why the fixture cannot run here (no binaries, not root, no `postgres`
user); `require_pg_cluster()` skips with that reason, or fails under CI=true.

The cluster trades durability for speed (`fsync=off`): it is for tests and benchmarks, not data.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

PG_BIN = Path(os.environ.get("HIBIKI_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
HOST = "127.0.0.1"
START_TIMEOUT = 60  # seconds pg_ctl waits for a server to accept connections
WAIT_STEP = 0.02  # seconds between polls of the replica's replay position (no event to wait on)


def missing_reason() -> str | None:
    """Why a cluster cannot be made here, or None if it can."""
    for tool in ("initdb", "pg_ctl", "pg_basebackup"):
        if not (PG_BIN / tool).is_file():
            return f"PostgreSQL 15 binaries not found ({PG_BIN / tool} missing)"
    if shutil.which("runuser") is None:
        return "runuser not found (needed to run PostgreSQL as the postgres user)"
    if os.geteuid() != 0:
        return "must run as root to start PostgreSQL as the postgres user"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no {PG_USER!r} OS user"
    return None


def require_pg_cluster() -> None:
    """Skip the calling test (fail it under CI=true) if no cluster can be made here."""
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: PostgreSQL is required)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PgServer:
    """One PostgreSQL server of the cluster: its data dir, port and log file."""

    name: str
    data: Path
    port: int
    log: Path
    running: bool = False

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@{HOST}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5)

    def start(self) -> None:
        timeout = str(START_TIMEOUT)
        _run_pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", timeout, "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`mode`: smart, fast or immediate); a stopped one is left alone."""
        if self.running:
            _run_pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False


class PgCluster:
    """A primary and one streaming replica; see the module docstring."""

    def __init__(self, root: Path, settings: Sequence[str] = ()) -> None:
        self.root = root
        self.sockets = root / "sockets"
        self.primary = PgServer("primary", root / "primary", free_port(), root / "primary.log")
        self.replica = PgServer("replica", root / "replica", free_port(), root / "replica.log")
        self._settings = tuple(settings)

    @classmethod
    @contextlib.contextmanager
    def started(cls, settings: Sequence[str] = ()) -> Iterator[PgCluster]:
        """A running primary and replica, stopped and removed on leaving however it ends;
        `settings` are extra postgresql.conf lines for both (`"shared_buffers = '512MB'"`)."""
        root = Path(tempfile.mkdtemp(prefix="hibiki-pg-"))
        cluster = cls(root, settings)
        try:
            cluster._create()
            yield cluster
        finally:
            cluster.close()

    def _create(self) -> None:
        self.sockets.mkdir()
        os.chmod(self.root, 0o755)
        shutil.chown(self.root, PG_USER, PG_USER)
        shutil.chown(self.sockets, PG_USER, PG_USER)
        _run_pg(
            "initdb",
            "-D",
            str(self.primary.data),
            "-U",
            PG_USER,
            "-A",
            "trust",
            "--no-sync",
            "--no-instructions",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self._configure(self.primary, "wal_level = replica", "max_wal_senders = 5")
        self.primary.start()
        _run_pg(
            "pg_basebackup",
            "-h",
            HOST,
            "-p",
            str(self.primary.port),
            "-U",
            PG_USER,
            "-D",
            str(self.replica.data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )
        self._configure(self.replica, "hot_standby = on")
        self.replica.start()

    def _configure(self, server: PgServer, *lines: str) -> None:
        """Append settings (later lines win; the replica's copy repeats the primary's)."""
        common = (
            f"port = {server.port}",
            f"listen_addresses = '{HOST}'",
            f"unix_socket_directories = '{self.sockets}'",
            "fsync = off",
            "full_page_writes = off",
            *self._settings,
        )
        with open(server.data / "postgresql.conf", "a") as conf:
            conf.write("\n# hibiki test cluster\n" + "\n".join((*common, *lines)) + "\n")

    def close(self) -> None:
        """Stop both servers (immediate: nothing to keep) and remove the temp dir."""
        try:
            for server in (self.replica, self.primary):
                with contextlib.suppress(subprocess.CalledProcessError):
                    server.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # Replica control -------------------------------------------------------------------------

    def stop_replica(self) -> None:
        self.replica.stop("fast")

    def start_replica(self) -> None:
        self.replica.start()

    def pause_replay(self) -> None:
        """Pause WAL replay on the replica (it keeps receiving): it lags from here."""
        with self.replica.connect() as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            deadline = time.monotonic() + START_TIMEOUT
            while _one(conn, "SELECT pg_get_wal_replay_pause_state()") != "paused":
                if time.monotonic() > deadline:
                    raise TimeoutError("replica replay did not pause")
                time.sleep(WAIT_STEP)

    def resume_replay(self) -> None:
        with self.replica.connect() as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    def wait_caught_up(self, timeout: float = START_TIMEOUT) -> None:
        """Return once the replica has replayed everything the primary has written so far."""
        with self.primary.connect() as primary:
            target = _one(primary, "SELECT pg_current_wal_lsn()::text")
        deadline = time.monotonic() + timeout
        with self.replica.connect() as replica:
            while not _one(replica, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", target):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica did not replay up to {target}")
                time.sleep(WAIT_STEP)

    def create_database(self, name: str) -> None:
        """A new database on the primary; returns once the replica has it too."""
        with self.primary.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.wait_caught_up()


def _one(conn: psycopg.Connection[tuple[object, ...]], sql: str, *args: object) -> object:
    row = conn.execute(sql, args or None).fetchone()
    assert row is not None
    return row[0]


def _run_pg(tool: str, *args: str) -> None:
    """Run a PostgreSQL program as the postgres user; its output is in the raised error."""
    argv = [str(PG_BIN / tool), *args]
    result = subprocess.run(
        ["runuser", "-u", PG_USER, "--", *argv],
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
    )
    if result.returncode != 0:
        raise subprocess.CalledProcessError(
            result.returncode, argv, output=result.stdout, stderr=result.stderr
        )

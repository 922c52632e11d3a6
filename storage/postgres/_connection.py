"""Connection settings of the PostgreSQL backend, and the error mapping every job shares.

Errors never repeat the database URL: it may carry a password. They name the server by
host, port and database (`target`), which is what an operator needs to look at.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.errors
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from storage.protocols import Conflict, NotFound, StorageError

SYNCHRONOUS_COMMIT_MODES = frozenset({"on", "off", "local", "remote_write", "remote_apply"})
# Rows as tuples of whatever the columns hold; each job builds typed records from them.
Connection = psycopg.Connection[tuple[Any, ...]]
CONNECT_TIMEOUT = 5.0  # seconds: connecting, and waiting for a pooled connection


@dataclass(frozen=True, slots=True)
class Settings:
    """How the store connects: `statement_timeout` in seconds bounds every query (an abandoned
    read cannot run on forever); `synchronous_commit` is PostgreSQL's durability setting."""

    url: str
    pool_size: int = 10
    statement_timeout: float = 10.0
    synchronous_commit: str = "on"

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if not self.statement_timeout > 0:
            raise ValueError("statement_timeout must be positive")
        if self.synchronous_commit.lower() not in SYNCHRONOUS_COMMIT_MODES:
            raise ValueError(
                f"synchronous_commit must be one of {sorted(SYNCHRONOUS_COMMIT_MODES)}"
            )

    @property
    def target(self) -> str:
        """The server as an operator names it, without user or password."""
        return target_of(self.url)

    def configure(self, conn: Connection) -> None:
        """Session settings of every connection (the pool calls this on each new one)."""
        timeout_ms = max(1, round(self.statement_timeout * 1000))
        conn.execute(f"SET statement_timeout = {timeout_ms:d}")
        conn.execute(f"SET synchronous_commit = {self.synchronous_commit.lower()}")

    def connect(self) -> Connection:
        """One configured connection outside the pool (schema migration, the probe)."""
        conn = psycopg.connect(
            self.url, autocommit=True, connect_timeout=max(1, round(CONNECT_TIMEOUT))
        )
        try:
            self.configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn


def target_of(url: str) -> str:
    """The database `url` names, as `host:port/dbname` without credentials: how the shard
    directory, metrics and logs name it."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "the configured PostgreSQL server"
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    dbname = str(params.get("dbname") or params.get("user") or "")
    return f"{host}:{port}/{dbname}"


def _first_line(exc: BaseException, url: str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    return text.replace(str(password), "***") if password else text


@contextlib.contextmanager
def postgres_errors(url: str) -> Iterator[None]:
    """psycopg errors reaching the caller are ours (server down, timeout, bug): say so by type."""
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        raise StorageError(
            f"no connection to PostgreSQL at {target_of(url)} within {CONNECT_TIMEOUT:g} s"
        ) from exc
    except psycopg.errors.QueryCanceled as exc:
        raise StorageError(
            f"a query on PostgreSQL at {target_of(url)} was cancelled (statement_timeout?):"
            f" {_first_line(exc, url)}"
        ) from exc
    except psycopg.errors.TransactionRollback as exc:  # a deadlock or serialization failure
        raise StorageError(
            f"PostgreSQL at {target_of(url)} rolled a transaction back: {_first_line(exc, url)}"
        ) from exc
    except psycopg.OperationalError as exc:
        raise StorageError(
            f"cannot use PostgreSQL at {target_of(url)}: {_first_line(exc, url)}"
        ) from exc
    except psycopg.Error as exc:
        raise StorageError(f"{type(exc).__name__}: {_first_line(exc, url)}") from exc


def constraint_error(exc: psycopg.errors.IntegrityError, taken: str) -> StorageError:
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return Conflict(f"{taken} is taken")
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        return NotFound("unknown user id")
    return StorageError(f"{type(exc).__name__}: {exc}")


def now_ms() -> int:
    return time.time_ns() // 1_000_000

"""The readiness probe: a real commit on the primary that changes nothing."""

from __future__ import annotations

import psycopg

from storage.postgres._connection import Settings, postgres_errors
from storage.protocols import StorageError


def probe_write(settings: Settings, busy_timeout: float) -> str | None:
    """Commit a no-op write (the version row set to itself); None, or what failed.

    A real commit proves what a read would not: this is the primary (a replica refuses the
    write), its locks can be taken within `busy_timeout` seconds, and WAL is flushed (with
    synchronous_commit on). Its own connection, so it tests the server, not the pool.
    Blocking: run it on a thread.
    """
    timeout_ms = max(1, round(busy_timeout * 1000))
    try:
        with postgres_errors(settings.url):
            conn = psycopg.connect(
                settings.url, autocommit=True, connect_timeout=max(1, round(busy_timeout))
            )
            with conn:
                settings.configure(conn)
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = {timeout_ms:d}")
                    conn.execute(f"SET LOCAL statement_timeout = {timeout_ms:d}")
                    conn.execute("UPDATE hibiki_schema SET version = version")
    except StorageError as exc:
        return str(exc)
    return None

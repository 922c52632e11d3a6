"""PostgreSQL for the benchmarks' `hibiki-pg` runs: a fresh database per run on the server that
`--db URL` names (so no run sees another's accounts and rooms), dropped after; and the backend
processes serving it, whose CPU the run also costs (hibiki's own CPU leaves the database out)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg


def with_database(url: str, dbname: str) -> str:
    """`url` naming database `dbname` instead (user, host, port and options kept)."""
    return urlsplit(url)._replace(path=f"/{dbname}").geturl()


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """The URL of a new empty database beside `admin_url`'s, dropped (connections and all) after."""
    dbname = f"hibiki_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        yield with_database(admin_url, dbname)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def backend_pids(admin_url: str, url: str) -> tuple[int, ...]:
    """The PostgreSQL backends connected to `url`'s database now (hibiki's pool holds its
    connections open, so these serve the whole run). Shared processes (WAL writer,
    checkpointer) are not counted."""
    dbname = urlsplit(url).path.lstrip("/")
    query = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        return tuple(int(row[0]) for row in admin.execute(query, (dbname,)).fetchall())

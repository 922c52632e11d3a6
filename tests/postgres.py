"""PostgreSQL for tests: fresh databases on the machine's server at 127.0.0.1:5432 (user
postgres, trust auth), each dropped after its test. Without PostgreSQL these tests skip with
the reason, except under CI=true, where a missing PostgreSQL fails them.

Use the `postgres_url` fixture (import it into a conftest or a test module): `url(name)` is
the URL of database `name`, created empty on first use; the same name is the same database.
`URL` and `database_url(dbname)` serve code that needs the server itself (e.g. to alter rows).

Tests that only need empty databases (the store contract, shards, clusters, migrations) borrow
them from `reused_databases` instead: made once per test process, emptied between tests. A
test that changes a database itself (ALTER DATABASE, a setting) keeps `postgres_url`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Self

import psycopg
import pytest

HOST = os.environ.get("HIBIKI_TEST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("HIBIKI_TEST_PG_PORT", "5432"))
USER = "postgres"
ADMIN_DB = "test"  # connected to while creating and dropping the tests' databases

PostgresUrl = Callable[[str], str]


def database_url(dbname: str) -> str:
    return f"postgresql://{USER}@{HOST}:{PORT}/{dbname}"


def missing(reason: str) -> None:
    """Skip, or fail under CI=true where PostgreSQL is required."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: PostgreSQL is required)")
    pytest.skip(reason)


def admin_connection() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the admin database; skips (or fails) if unreachable."""
    try:
        return psycopg.connect(database_url(ADMIN_DB), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        missing(f"PostgreSQL at {HOST}:{PORT} is unreachable: {str(exc).strip()}")
        raise AssertionError("unreachable") from exc  # missing() raised already


class TestDatabases:
    """Databases created for one test (`hibiki_t_<random>`), all dropped by `drop_all`."""

    __test__ = False

    def __init__(self) -> None:
        self.prefix = f"hibiki_t_{uuid.uuid4().hex[:12]}"
        self.created: dict[str, str] = {}  # name -> database name
        self._admin = admin_connection()

    def url(self, name: str) -> str:
        return self.urls([name])[0]

    def urls(self, names: Sequence[str]) -> list[str]:
        """The URLs of databases `names`; those not made yet are created at once, each on its
        own connection (the server creates them in parallel: about half the time for four)."""
        new = [name for name in dict.fromkeys(names) if name not in self.created]
        for name in new:
            self.created[name] = f"{self.prefix}_{len(self.created)}"
        _on_each([self.created[name] for name in new], 'CREATE DATABASE "{}"', self._admin)
        return [database_url(self.created[name]) for name in names]

    def drop_all(self) -> None:
        try:
            _on_each(
                list(self.created.values()),
                'DROP DATABASE IF EXISTS "{}" WITH (FORCE)',
                self._admin,
            )
        finally:
            self._admin.close()


def _on_each(
    dbnames: list[str], statement: str, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    """Run `statement` for each database name: one on `admin`, the others concurrently, each on
    a connection of its own."""
    if not dbnames:
        return
    first, rest = dbnames[0], dbnames[1:]

    def run(dbname: str) -> None:
        with psycopg.connect(database_url(ADMIN_DB), autocommit=True, connect_timeout=3) as conn:
            conn.execute(statement.format(dbname))

    with ThreadPoolExecutor(max_workers=max(1, len(rest))) as pool:
        futures = [pool.submit(run, dbname) for dbname in rest]
        admin.execute(statement.format(first))
        for future in futures:
            future.result()


@pytest.fixture
def postgres_url() -> Iterator[PostgresUrl]:
    """`url(name)`: a fresh PostgreSQL database per name, dropped after the test."""
    databases = TestDatabases()
    try:
        yield databases.url
    finally:
        databases.drop_all()


class ReusedDatabases:
    """Databases made once per test process and lent to one test at a time, each emptied when
    it comes back: its `public` schema dropped and made again as a fresh database has it. A
    test's view is a fresh `TestDatabases` (empty databases by name) at a tenth of the cost:
    CREATE and DROP DATABASE cost ~0.5 s each on a loaded machine, the reset ~30 ms."""

    __test__ = False

    def __init__(self) -> None:
        self._made = TestDatabases()
        self._free: list[str] = []  # names in `self._made`, empty and unused

    def lend(self) -> LentDatabases:
        return LentDatabases(self)

    def take(self, count: int) -> list[str]:
        """The database names of `count` empty databases (made now if none is free)."""
        taken, self._free = self._free[:count], self._free[count:]
        new = [f"pool{len(self._made.created) + i}" for i in range(count - len(taken))]
        self._made.urls(new)
        return taken + [self._made.created[name] for name in new]

    def give_back(self, dbnames: Sequence[str]) -> None:
        """Empty `dbnames` (ending any connection a test left open) for the next test."""
        for dbname in dbnames:
            self._made._admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )
            with psycopg.connect(database_url(dbname), autocommit=True) as conn:
                conn.execute("DROP SCHEMA public CASCADE")
                conn.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
                conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
                left = conn.execute(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
                ).fetchone()
                assert left == (0,), f"{dbname} is not empty after its reset: {left}"
            self._free.append(dbname)

    def drop_all(self) -> None:
        self._made.drop_all()


class LentDatabases:
    """One test's databases from a `ReusedDatabases`: `url(name)` and `urls(names)` as
    `TestDatabases` has them (empty on first use, the same name the same database); given back
    (emptied for the next test) by `give_back()` or at the end of `with pool.lend() as dbs:`."""

    __test__ = False

    def __init__(self, pool: ReusedDatabases) -> None:
        self._pool = pool
        self.created: dict[str, str] = {}

    def url(self, name: str) -> str:
        return self.urls([name])[0]

    def urls(self, names: Sequence[str]) -> list[str]:
        new = [name for name in dict.fromkeys(names) if name not in self.created]
        self.created |= zip(new, self._pool.take(len(new)), strict=True)
        return [database_url(self.created[name]) for name in names]

    def give_back(self) -> None:
        self._pool.give_back(list(self.created.values()))
        self.created = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.give_back()


@pytest.fixture(scope="session")
def reused_databases() -> Iterator[ReusedDatabases]:
    pool = ReusedDatabases()  # skips (or fails under CI=true) without PostgreSQL
    try:
        yield pool
    finally:
        pool.drop_all()

"""`open_store(url)` and `backup(url, dest)`: which database a URL names, and a clear refusal
for one no backend here serves (docs/operations.md, "Database URLs")."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from server.cli import main
from server.config import Config, ConfigError
from storage import BackupError, CompositeStore, StorageError, backup, open_store
from storage.backends import SUPPORTED
from storage.postgres import PostgresStore
from storage.sqlite import SQLiteStore

SCRYPT_N = 2**10


def _file_of(url: str | Path) -> str:
    store = open_store(url)
    assert isinstance(store, CompositeStore)
    assert isinstance(store.backend, SQLiteStore)
    return store.backend.path


def test_a_plain_path_or_a_sqlite_url_names_a_sqlite_file() -> None:
    assert _file_of("hibiki.db") == "hibiki.db"  # what --db hibiki.db always meant
    assert _file_of("/var/lib/hibiki/hibiki.db") == "/var/lib/hibiki/hibiki.db"
    assert _file_of(Path("data") / "x.db") == "data/x.db"
    assert _file_of("file:odd.db") == "file:odd.db"  # no scheme://: a path, taken as is
    assert _file_of("sqlite:///relative/x.db") == "relative/x.db"
    assert _file_of("sqlite:////absolute/x.db") == "/absolute/x.db"
    assert _file_of("SQLite:///x.db") == "x.db"
    assert _file_of("sqlite:///my%20chat.db") == "my chat.db"


async def test_a_sqlite_url_opens_the_file_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with trio.fail_after(10):
        async with open_store("sqlite:///relative.db", scrypt_n=SCRYPT_N) as store:
            alice = await store.create_user("alice", "pw")
        async with open_store(f"sqlite:///{tmp_path}/absolute.db", scrypt_n=SCRYPT_N) as store:
            bob = await store.create_user("bob", "pw")
        # The same files, named by plain absolute paths: the users are there.
        async with open_store(tmp_path / "relative.db", scrypt_n=SCRYPT_N) as store:
            assert await store.check_password("alice", "pw") == alice
        async with open_store(str(tmp_path / "absolute.db"), scrypt_n=SCRYPT_N) as store:
            assert await store.check_password("bob", "pw") == bob


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://hibiki:s3cret@db.example/hibiki", "unknown database URL scheme mysql://"),
        ("sqlite://db.example/x.db", "names a file, not a host"),
        ("sqlite:///x.db?mode=ro", "takes no ?query or #fragment"),
        ("sqlite:///x.db#frag", "takes no ?query or #fragment"),
        ("sqlite:///", "no file in"),
        ("", "no database given"),
    ],
)
def test_a_url_no_backend_serves_is_refused_naming_the_supported_forms(url: str, says: str) -> None:
    with pytest.raises(StorageError) as raised:
        open_store(url)
    message = str(raised.value)
    assert says in message
    assert "s3cret" not in message
    assert message.endswith(f": use {SUPPORTED}")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://hibiki:s3cret@db.example:6543/chat?sslmode=require",
        "postgres://hibiki:s3cret@db.example:6543/chat?sslmode=require",
        "PostgreSQL://hibiki:s3cret@db.example:6543/chat?sslmode=require",
    ],
)
def test_a_postgresql_url_names_a_postgres_store_with_its_options(url: str) -> None:
    store = open_store(url, pool_size=3, statement_timeout=2.5, synchronous_commit="off")
    assert isinstance(store, CompositeStore)
    assert isinstance(store.backend, PostgresStore)
    settings = store.backend.settings
    assert settings.url == "postgresql://hibiki:s3cret@db.example:6543/chat?sslmode=require"
    assert (settings.pool_size, settings.statement_timeout) == (3, 2.5)
    assert settings.synchronous_commit == "off"
    assert store.backend.target == "db.example:6543/chat"  # what errors name: no password


async def test_an_unreachable_postgresql_fails_to_open_without_showing_the_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    store = open_store(f"postgresql://hibiki:s3cret@127.0.0.1:{port}/chat", scrypt_n=SCRYPT_N)
    with trio.fail_after(20), pytest.raises(StorageError) as raised:
        await store.open()
    message = str(raised.value)
    assert f"cannot use PostgreSQL at 127.0.0.1:{port}/chat" in message
    assert "s3cret" not in message
    with pytest.raises(StorageError, match="closed"):
        await store.get_room("lobby")


def test_backup_of_postgresql_says_to_use_pg_dump(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="pg_dump") as raised:
        backup("postgresql://hibiki:s3cret@db.example/hibiki", tmp_path / "out.db")
    assert "s3cret" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_cli_backup_of_postgresql_says_to_use_pg_dump_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["backup", "--db", "postgresql://db.example/hibiki", str(tmp_path / "out.db")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("hibiki: hibiki backup copies SQLite files") and "pg_dump" in err
    assert list(tmp_path.iterdir()) == []


def test_config_show_masks_the_password_of_a_postgresql_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIBIKI_STATEMENT_TIMEOUT", "2.5")
    monkeypatch.delenv("HIBIKI_POOL_SIZE", raising=False)  # tests/conftest.py sets it
    code = main(["config", "show", "--db", "postgresql://hibiki:s3cret@db.example/chat"])
    assert code == 0
    out = capsys.readouterr().out
    assert 'db_path = "postgresql://hibiki:********@db.example/chat"  # flag' in out
    assert "statement_timeout = 2.5  # env HIBIKI_STATEMENT_TIMEOUT" in out
    assert "pool_size = 10" in out and 'synchronous_commit = "on"' in out
    assert "s3cret" not in out


def test_postgresql_settings_are_checked_in_the_config() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_flat(pool_size=0, statement_timeout=0.0, synchronous_commit="maybe")
    assert sorted(key for key, _ in caught.value.problems) == [
        "pool_size",
        "statement_timeout",
        "synchronous_commit",
    ]
    assert Config.from_flat(synchronous_commit="OFF").storage.synchronous_commit == "OFF"

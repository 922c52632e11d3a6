"""`open_store(url)` and `backup(url, dest)`: which database a URL names, and a clear refusal
for one no backend here serves (docs/operations.md, "Database URLs")."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from server.cli import main
from storage import CompositeStore, StorageError, backup, open_store
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
        ("postgresql://hibiki:s3cret@db.example/hibiki", "postgresql:// databases are not supp"),
        ("postgres://hibiki:s3cret@db.example/hibiki", "postgres:// databases are not supported"),
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
    assert message.endswith(": use sqlite:///PATH, sqlite:////ABSOLUTE/PATH or a plain file path")


def test_backup_refuses_a_url_it_cannot_back_up(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not supported yet"):
        backup("postgresql://db.example/hibiki", tmp_path / "out.db")
    assert list(tmp_path.iterdir()) == []


def test_cli_backup_of_an_unsupported_url_says_so_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["backup", "--db", "postgresql://db.example/hibiki", str(tmp_path / "out.db")])
    assert code == 1
    assert "hibiki: postgresql:// databases are not supported yet" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

"""`hibiki serve` that cannot start says why in one line and exits 1, with no traceback.

Root's capabilities let it write read-only files and directories, and CI runs as root. So as root
`hibiki serve` runs under `setpriv` with no capabilities at all (uid 0 still, but the kernel then
checks file modes as for any owner). Dropping them keeps the interpreter reachable wherever it is:
a pyenv Python under /root (0700) cannot be run as `nobody`. The in-process store test cannot drop
them, so it skips those two cases as root; the serve test covers them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from storage import StorageError, open_store
from storage.sqlite import MIGRATIONS

ROOT = Path(__file__).resolve().parents[2]
_VERSION = len(MIGRATIONS)


def _under_a_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "plain").write_text("")
    return tmp_path / "plain" / "hibiki.db", f"{tmp_path / 'plain'} is not a directory"


def _in_a_missing_directory(tmp_path: Path) -> tuple[Path, str]:
    return tmp_path / "no" / "hibiki.db", f"directory {tmp_path / 'no'} does not exist"


def _a_directory(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "dir.db").mkdir()
    return tmp_path / "dir.db", "it is a directory"


def _not_a_database(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
    return tmp_path / "garbage.db", "DatabaseError: file is not a database"


def _from_a_newer_version(tmp_path: Path) -> tuple[Path, str]:
    conn = sqlite3.connect(tmp_path / "newer.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    return tmp_path / "newer.db", f"database schema v99 is newer than this code (v{_VERSION})"


def _a_read_only_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "ro.db").touch(mode=0o444)
    return tmp_path / "ro.db", "the file is not readable and writable"


def _in_a_read_only_directory(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "ro").mkdir(mode=0o555)
    return tmp_path / "ro" / "hibiki.db", f"directory {tmp_path / 'ro'} is not writable"


_READ_ONLY = {_a_read_only_file, _in_a_read_only_directory}
_CAP_SETPCAP = 8  # bit in /proc/self/status CapEff: may shrink the capability bounding set


def _without_capabilities() -> list[str]:
    """The command prefix that runs a program without root's power over file modes: none when
    not root, else `setpriv` clearing every capability (skips, saying why, where it cannot)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("as root the read-only cases need setpriv (util-linux) to drop capabilities")
    effective = re.search(r"^CapEff:\s*([0-9a-f]+)$", Path("/proc/self/status").read_text(), re.M)
    if effective is None or not int(effective[1], 16) >> _CAP_SETPCAP & 1:
        pytest.skip("as root the read-only cases need CAP_SETPCAP to drop capabilities")
    return [setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]


def _hibiki_serve(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "server.cli", "serve", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )


_BAD_PATHS = [
    _under_a_file,
    _in_a_missing_directory,
    _a_directory,
    _not_a_database,
    _from_a_newer_version,
    _a_read_only_file,
    _in_a_read_only_directory,
]
_ROOT_WRITES_THEM = pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root writes read-only files and directories (the serve test drops that power)",
)


@pytest.mark.parametrize("bad_path", _BAD_PATHS)
def test_serve_with_a_database_it_cannot_open_exits_1_with_one_line(
    tmp_path: Path, bad_path: Callable[[Path], tuple[Path, str]]
) -> None:
    prefix = _without_capabilities() if bad_path in _READ_ONLY else []
    db, reason = bad_path(tmp_path)
    result = _hibiki_serve("--port", "0", "--db", str(db), prefix=tuple(prefix))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [f"hibiki: cannot open database {db}: {reason}"]


@pytest.mark.parametrize(
    "bad_path",
    [pytest.param(p, marks=_ROOT_WRITES_THEM) if p in _READ_ONLY else p for p in _BAD_PATHS],
)
async def test_opening_the_store_raises_a_storage_error_saying_why(
    tmp_path: Path, bad_path: Callable[[Path], tuple[Path, str]]
) -> None:
    db, reason = bad_path(tmp_path)
    store = open_store(db, scrypt_n=2**10)
    with pytest.raises(StorageError) as raised:
        await store.open()
    assert str(raised.value) == f"cannot open database {db}: {reason}"
    assert not (tmp_path / "no").exists()


def test_serve_on_a_port_in_use_exits_1_with_one_line_saying_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "hibiki.db"
        result = _hibiki_serve("--port", str(port), "--host", "127.0.0.1", "--db", str(db))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    # The log lines before it are the server's usual ones ("stopped": the database was closed).
    last = result.stderr.splitlines()[-1]
    assert last == f"hibiki: cannot listen on 127.0.0.1:{port}: Address already in use"

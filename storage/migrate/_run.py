"""One `hibiki migrate` run: connect, copy a pass (unless verifying only), verify, summarise."""

from __future__ import annotations

from dataclasses import dataclass

from storage.migrate import _bulk, _target
from storage.migrate._bulk import BULK_MIN_ROWS
from storage.migrate._progress import ProgressFactory, no_progress
from storage.migrate._source import open_snapshot, sqlite_path
from storage.migrate.copy import DEFAULT_CHUNK_ROWS, CopyStats, copy_pass
from storage.migrate.verify import Verification, verify
from storage.protocols import StorageError


@dataclass
class MigrationResult:
    source: str
    target: str
    copied: CopyStats | None  # None with verify_only
    verification: Verification

    @property
    def ok(self) -> bool:
        return self.verification.ok


def migrate(
    source_url: str,
    target_url: str,
    *,
    verify_only: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    bulk_min_rows: int = BULK_MIN_ROWS,
    progress: ProgressFactory = no_progress,
) -> MigrationResult:
    """Copy what the SQLite database at `source_url` holds beyond the PostgreSQL `target_url`
    (creating its schema if it has none), then verify both from one source snapshot. Copies
    of at least `bulk_min_rows` messages (and more than the target holds) run in bulk mode.

    Blocking. Safe while a server writes to the source: the pass copies one snapshot, and a
    later pass copies what came after. `MigrationRefused` if the target holds other data
    (nothing is written then); `StorageError` if a database cannot be read. The result's
    `ok` is False when verification found a difference.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    path = sqlite_path(source_url)
    described = _target.describe(target_url)
    with _target.connect(target_url) as conn, open_snapshot(path) as source:
        copied = None
        if verify_only:
            if not _target.has_schema(conn):
                raise StorageError(f"{described} has no hibiki schema: nothing to verify")
            if _bulk.pending(conn):
                raise StorageError(
                    f"a cut-off pass left {described} without its message constraints:"
                    " run hibiki migrate (without --verify-only) to finish it"
                )
        else:
            marker = _target.prepare(conn, source)
            copied = copy_pass(
                conn,
                source,
                marker,
                chunk_rows=chunk_rows,
                bulk_min_rows=bulk_min_rows,
                progress=progress,
            )
            _target.finish_pass(conn)
        verification = verify(source, conn, progress)
    return MigrationResult(path, described, copied, verification)

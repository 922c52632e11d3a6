"""`hibiki migrate`: copy a SQLite database into PostgreSQL, resumably, then verify it.

A pass reads one snapshot of the source (safe while the old server writes), copies what the
target lacks (the whole catalog merged, messages after the last one copied, in chunks) and
verifies per room. Run it while the old server is live, then once more after stopping it.
The source is read `SOURCE_CHUNK_ROWS` rows at a time (verification compares in such chunks).
"""

from storage.migrate._bulk import BULK_MIN_ROWS
from storage.migrate._errors import MigrationRefused
from storage.migrate._progress import Progress, ProgressFactory, no_progress, terminal_progress
from storage.migrate._run import MigrationResult, migrate
from storage.migrate._source import CHUNK_ROWS as SOURCE_CHUNK_ROWS
from storage.migrate.copy import DEFAULT_CHUNK_ROWS, CopyStats
from storage.migrate.report import render
from storage.migrate.verify import Mismatch, Verification

__all__ = [
    "BULK_MIN_ROWS",
    "DEFAULT_CHUNK_ROWS",
    "SOURCE_CHUNK_ROWS",
    "CopyStats",
    "MigrationRefused",
    "MigrationResult",
    "Mismatch",
    "Progress",
    "ProgressFactory",
    "Verification",
    "migrate",
    "no_progress",
    "render",
    "terminal_progress",
]

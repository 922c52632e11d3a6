"""storage.migrate's public surface, pinned: a name added to or dropped from `__all__` is a
decision, made here on purpose."""

from __future__ import annotations

import storage.migrate

PUBLIC = {
    "BULK_MIN_ROWS",
    "DEFAULT_CHUNK_ROWS",
    "CopyStats",
    "MigrationRefused",
    "MigrationResult",
    "Mismatch",
    "Progress",
    "ProgressFactory",
    "SOURCE_CHUNK_ROWS",
    "Verification",
    "migrate",
    "no_progress",
    "render",
    "terminal_progress",
}


def test_all_is_exactly_the_public_surface_and_every_name_exists() -> None:
    assert set(storage.migrate.__all__) == PUBLIC
    assert len(storage.migrate.__all__) == len(PUBLIC)
    for name in storage.migrate.__all__:
        assert getattr(storage.migrate, name) is not None, name


def test_a_refusal_is_a_storage_error() -> None:
    assert issubclass(storage.migrate.MigrationRefused, storage.StorageError)

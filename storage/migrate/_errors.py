"""The migration's own error: a refusal says the operator asked for something unsafe."""

from __future__ import annotations

from storage.protocols import StorageError


class MigrationRefused(StorageError):
    """The target holds data that did not come from this source (or the source is not one this
    tool copies): nothing was written."""

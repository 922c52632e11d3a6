"""Persistence behind one small interface; backends are interchangeable."""

from storage.protocols import (
    Appended,
    Conflict,
    NewMessage,
    NotFound,
    Room,
    StorageError,
    Store,
    User,
)
from storage.sqlite.store import SQLiteStore

__all__ = [
    "Appended",
    "Conflict",
    "NewMessage",
    "NotFound",
    "Room",
    "SQLiteStore",
    "StorageError",
    "Store",
    "User",
]

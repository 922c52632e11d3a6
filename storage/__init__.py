"""Persistence behind one small interface; backends are interchangeable."""

from storage.protocols import (
    Appended,
    Conflict,
    NewMessage,
    NotFound,
    Room,
    StorageError,
    Store,
    TokenGrant,
    User,
)
from storage.sqlite import SQLiteStore

__all__ = [
    "Appended",
    "Conflict",
    "NewMessage",
    "NotFound",
    "Room",
    "SQLiteStore",
    "StorageError",
    "Store",
    "TokenGrant",
    "User",
]

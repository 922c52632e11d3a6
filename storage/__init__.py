"""Persistence behind small protocols; backends are interchangeable."""

from storage.protocols import (
    AccountRecords,
    AccountStore,
    Appended,
    Backend,
    BackupError,
    BackupResult,
    Conflict,
    Lifecycle,
    MessageStore,
    NewMessage,
    NotFound,
    Room,
    RoomStore,
    StorageError,
    Store,
    User,
)
from storage.sqlite.store import SQLiteStore

__all__ = [
    "AccountRecords",
    "AccountStore",
    "Appended",
    "Backend",
    "BackupError",
    "BackupResult",
    "Conflict",
    "Lifecycle",
    "MessageStore",
    "NewMessage",
    "NotFound",
    "Room",
    "RoomStore",
    "SQLiteStore",
    "StorageError",
    "Store",
    "User",
]

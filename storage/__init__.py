"""Persistence behind small protocols; `open_store(url)` picks the backend.

The server codes against `Store` (or the narrowest part it needs: `AccountStore`, `RoomStore`,
`MessageStore`, `Lifecycle`); backends live in subpackages (`storage.sqlite`) and implement
`Backend`, under the account policy (`Accounts`) that `CompositeStore` puts in front of them.
"""

from storage.accounts import Accounts
from storage.backends import backup, open_store
from storage.cache import MembershipCache
from storage.composite import CompositeStore
from storage.protocols import (
    KIND_DELETE,
    KIND_EDIT,
    KIND_MESSAGE,
    AccountRecords,
    AccountStore,
    Appended,
    Backend,
    BackupError,
    BackupResult,
    Conflict,
    EventOutbox,
    Lifecycle,
    MessageStore,
    NewMessage,
    NotFound,
    Profile,
    Room,
    RoomStore,
    Session,
    StorageError,
    Store,
    TokenGrant,
    User,
)

__all__ = [
    "KIND_DELETE",
    "KIND_EDIT",
    "KIND_MESSAGE",
    "AccountRecords",
    "AccountStore",
    "Accounts",
    "Appended",
    "Backend",
    "BackupError",
    "BackupResult",
    "CompositeStore",
    "Conflict",
    "EventOutbox",
    "Lifecycle",
    "MembershipCache",
    "MessageStore",
    "NewMessage",
    "NotFound",
    "Profile",
    "Room",
    "RoomStore",
    "Session",
    "StorageError",
    "Store",
    "TokenGrant",
    "User",
    "backup",
    "open_store",
]

"""The storage packages' public surface, pinned: a name added to or dropped from `__all__` is a
decision, made here on purpose. And the store's seams: which protocol each call belongs to."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import storage
import storage.postgres
import storage.sqlite
from storage import (
    AccountRecords,
    AccountStore,
    Backend,
    EventOutbox,
    Lifecycle,
    MessageStore,
    RoomStore,
    Store,
)

PUBLIC = {
    storage: {
        "KIND_DELETE",
        "KIND_EDIT",
        "KIND_MESSAGE",
        "MAX_SLOW_MODE",
        "MAX_TOPIC",
        "PRIVATE",
        "PUBLIC",
        "ROLES",
        "ROLE_ADMIN",
        "ROLE_MEMBER",
        "ROLE_OWNER",
        "AccountRecords",
        "AccountStore",
        "Accounts",
        "Appended",
        "Backend",
        "BackupError",
        "BackupResult",
        "Banned",
        "CompositeStore",
        "Conflict",
        "EventOutbox",
        "Lifecycle",
        "Member",
        "MembershipCache",
        "MessageStore",
        "NewMessage",
        "NotFound",
        "Profile",
        "Room",
        "RoomAdmin",
        "RoomStore",
        "Session",
        "StorageError",
        "Store",
        "TokenGrant",
        "User",
        "backup",
        "open_store",
    },
    storage.sqlite: {
        "MIGRATIONS",
        "ConnectionThread",
        "SQLiteStore",
        "connect",
        "current_version",
        "migrate",
    },
    storage.postgres: {
        "IDENTITY_TABLES",
        "MIGRATIONS",
        "MIGRATION_LOCK_KEY",
        "Connection",
        "PostgresStore",
        "VERSION_TABLE",
        "current_version",
        "migrate",
        "target_of",
    },
}


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_all_is_exactly_the_public_surface_and_every_name_exists(module: ModuleType) -> None:
    assert set(module.__all__) == PUBLIC[module]
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def _calls(protocol: type) -> set[str]:
    """The coroutine methods a protocol declares, its bases' included."""
    return {
        name
        for cls in protocol.__mro__
        if cls is not object
        for name, member in vars(cls).items()
        if inspect.iscoroutinefunction(member) and not name.startswith("__")
    }


def test_store_is_its_three_parts_and_a_lifecycle_with_nothing_shared() -> None:
    parts = {
        AccountStore: {"create_user", "check_password", "create_token", "user_for_token"}
        | {"grant_for_token", "revoke_token"}
        | {"sessions", "revoke_session", "revoke_sessions", "change_password"}
        | {"set_display_name", "profile", "record_activity"},
        RoomStore: {"create_room", "get_room", "list_rooms", "join_room", "leave_room"}
        | {"is_member", "rooms_of", "members", "mark_read", "read_cursors"}
        | {"add_member", "update_room", "role_of", "roles_of", "member_roles", "set_role"}
        | {"transfer_owner", "ban", "unban"},
        MessageStore: {"append_batch", "history", "messages_after", "last_seq", "last_seqs"}
        | {"message", "unread_count", "search", "index_search"},
        Lifecycle: {"open", "aclose", "probe"},
    }
    for protocol, calls in parts.items():
        assert _calls(protocol) == calls, protocol.__name__
    assert _calls(Store) == set().union(*parts.values())
    assert sum(len(calls) for calls in parts.values()) == len(_calls(Store)) == 44


def test_a_backend_stores_account_rows_instead_of_the_account_policy() -> None:
    rows = {"insert_user", "password_hash_of", "insert_token", "token_record", "delete_token"} | {
        "session_rows",
        "delete_sessions",
        "replace_password",
        "update_display_name",
        "profile_row",
        "touch",
    }
    assert _calls(AccountRecords) == rows
    events = {"messages_since_id", "last_message_id", "event_cursors", "advance_event_cursors"}
    events.add("messages_for_stream")  # and appender_lease, not a coroutine
    assert _calls(EventOutbox) == events
    assert _calls(Backend) == (
        rows | _calls(RoomStore) | _calls(MessageStore) | events | _calls(Lifecycle)
    )
    assert not _calls(Backend) & _calls(AccountStore)

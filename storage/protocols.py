"""The store protocols the server codes against, and the records and errors they share.

A `Store` is an `AccountStore`, a `RoomStore` and a `MessageStore` with a `Lifecycle`. Each part
is its own protocol, so a dependency names the narrowest one it uses (the writer needs only a
`MessageStore`) and routing can replace one part (a sharded `MessageStore`) without the others.

A database backend implements `Backend`: account rows (`AccountRecords`), rooms, messages and its
lifecycle. The account policy above the rows (`storage.accounts.Accounts`) and the assembled
`Store` (`storage.composite.CompositeStore`) are written once, for every backend.

All methods are trio-facing coroutines that never block the event loop: backends run their
database work on dedicated threads. Methods that write are not abandoned on cancellation (the
caller waits for the thread to finish), so an acknowledged write is never half-done.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from protocol import ChatError, Message, RoomEntry
from storage.read_state import ReadCursors, UnreadCounts
from storage.room_admin import RoomAdmin
from storage.search import MessageSearch


class StorageError(ChatError):
    """The store failed (our side's fault, not the peer's)."""


class Conflict(StorageError):
    """A unique name is already taken (user name, room name)."""


class NotFound(StorageError):
    """The named room or user does not exist."""


class Banned(StorageError):
    """The user is banned from the room: no join or invitation until unbanned."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a valid bearer token grants: acting as `user` until `expires_at` (ms since epoch)."""

    user: User
    expires_at: int


@dataclass(frozen=True, slots=True)
class Profile:
    """What others may see of a user. `display_name` is None until the user sets one;
    `last_seen` (ms since epoch) is None until a connection or request of theirs was recorded."""

    user: User
    display_name: str | None
    last_seen: int | None


@dataclass(frozen=True, slots=True)
class Session:
    """One login: a bearer token seen from the side of its owner. `id` is opaque and public
    (never the token nor its hash); `token_hash` stays on the server (to tell the caller's own
    session, and to revoke it). Times are ms since the epoch; `created_at` and `last_used_at`
    are None for a token issued before sessions were recorded (schema upgrade)."""

    id: str
    device: str
    created_at: int | None
    last_used_at: int | None
    expires_at: int
    token_hash: str


@dataclass(frozen=True, slots=True)
class Room:
    id: int  # settings and roles: storage/room_admin.py (`owner` None: no owner)
    name: str
    created_by: int
    last_seq: int
    visibility: str = "public"
    topic: str = ""
    slow_mode: int = 0
    owner: str | None = None


# What a stored room entry is (the `kind` column): a message, or a change to one of the room's
# earlier messages (`target`), which takes its own seq like a message.
KIND_MESSAGE = 0
KIND_EDIT = 1  # `text` is the target's new text
KIND_DELETE = 2  # `text` is ""


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A room entry accepted by the server and not yet stored: the store assigns id, seq and ts.

    An edit or delete (`kind`) names the message it changes (`target`, an id in the same room);
    the store applies it to that message in the same transaction, and stores it as an entry of
    its own. The server checked before queueing it that the target is the user's own message
    and not deleted; the store does not check again (an edit that lost a race with the
    message's delete changes nothing, and the delete erases its text too)."""

    room: str
    user_id: int
    user_name: str
    text: str
    client_id: str | None
    kind: int = KIND_MESSAGE
    target: int | None = None


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of storing one `NewMessage`: a `Message`, or an edit's or delete's event.

    `duplicate` is True when (room, user, client_id) was already stored: `message` is then the
    original, and nothing new was written."""

    message: RoomEntry
    duplicate: bool


class BackupError(StorageError):
    """The backup could not be made; nothing was left at the destination."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    dest: str
    pages: int
    bytes: int
    seconds: float


@dataclass(frozen=True, slots=True)
class ReplicaLag:
    """How far a read replica is behind, as a backend's replica reports it to storage.routing:
    `seconds` of replay (0 when it has replayed everything it received), and `bytes` of WAL
    received but not yet replayed."""

    seconds: float
    bytes: int


class AccountStore(Protocol):
    """Users and their bearer tokens."""

    async def create_user(self, name: str, password: str) -> User:
        """Raise `Conflict` if the name is taken. The password is stored only as a KDF hash."""

    async def check_password(self, name: str, password: str) -> User | None:
        """The user if the password matches, else None (the same cost for an unknown user)."""

    async def create_token(self, user_id: int, ttl_seconds: float, device: str = "") -> str:
        """A new random bearer token, a session labelled `device`; only its hash is stored."""

    async def user_for_token(self, token: str) -> User | None:
        """The token's user, or None if unknown or expired."""

    async def grant_for_token(self, token: str) -> TokenGrant | None:
        """The token's user and expiry, or None if unknown or expired (an open WebSocket keeps
        the expiry to close itself when the token runs out)."""

    async def revoke_token(self, token: str) -> None: ...

    async def sessions(self, user_id: int) -> list[Session]:
        """The user's unexpired sessions, newest first."""

    async def revoke_session(self, user_id: int, session_id: str) -> str | None:
        """Delete the user's session `session_id`; its token hash, or None if the user has no
        such session (another user's id is not found either)."""

    async def revoke_sessions(self, user_id: int, keep_token: str | None) -> list[str]:
        """Delete every session of the user but `keep_token`'s (all with None); their hashes."""

    async def change_password(
        self, user: User, old: str, new: str, keep_token: str | None
    ) -> list[str] | None:
        """None if `old` is not the user's password (at the KDF's cost); else set `new` and
        revoke every other session, in one transaction: the revoked token hashes."""

    async def set_display_name(self, user_id: int, display_name: str | None) -> str | None:
        """Set (None, "": clear) the display name, checked and normalised by
        `storage.accounts.check_display_name` (`ValueError` if refused); what was stored."""

    async def profile(self, name: str) -> Profile | None:
        """The user's public profile, or None for an unknown name."""

    async def record_activity(self, sessions: Mapping[str, int], users: Mapping[int, int]) -> None:
        """Raise each session's (by token hash) last use and each user's `last_seen` to the
        time given (ms; a time never moves back; unknown ones are skipped)."""


class RoomStore(ReadCursors, RoomAdmin, Protocol):
    """The catalog: rooms and who is a member (creating and joining: `RoomAdmin`)."""

    async def get_room(self, name: str) -> Room | None: ...

    async def list_rooms(self, limit: int = 1000) -> list[Room]: ...  # private ones too

    async def leave_room(self, room: str, user_id: int) -> bool: ...  # True: was a member

    async def is_member(self, room: str, user_id: int) -> bool: ...

    async def rooms_of(self, user_id: int) -> list[str]: ...  # names of the user's rooms

    async def members(self, room: str) -> list[str]: ...  # user names (roles: member_roles)


class MessageStore(UnreadCounts, MessageSearch, Protocol):
    """Each room's messages and its seq counter: what a shard holds for its rooms."""

    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        """Store a batch in ONE transaction (group commit); results in the batch's order.

        Assigns each new message a global id and its room's next gap-free seq. Durable on return
        (with the default synchronous=FULL). Raise `NotFound` only if a room does not exist;
        then nothing of the batch is stored.
        """

    async def history(
        self, room: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        """Up to `limit` messages with seq < before_seq (newest page if None), oldest first,
        and whether older ones exist. Keyset pagination on (room, seq); never OFFSET.

        Each message with its current text (`edited_at` set once edited); a deleted one as a
        tombstone (`deleted`, text ""). Edit and delete entries are not listed: their seqs are
        the gaps between the messages' seqs."""

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[RoomEntry]:
        """Entries with seq > after_seq, oldest first, at most `limit` (used by resume): messages
        as they were sent, and each later edit or delete as its `Edited`/`Deleted` event."""

    async def message(self, room: str, message_id: int) -> Message | None:
        """The room's message `message_id` as history shows it now (current text, or a
        tombstone), or None if the room has no message with that id (an edit or delete entry's
        id is not a message's)."""

    async def last_seq(self, room: str) -> int:
        """The room's latest seq (0 when empty); `NotFound` for an unknown room."""

    async def last_seqs(self, rooms: Collection[str]) -> dict[str, int]:
        """Each room's latest seq, in one read however many rooms (a node's periodic check of
        its live rooms); unknown rooms are left out, not an error."""


class EventOutbox(Protocol):
    """What the event stream keeps in the database, so a message committed but not yet appended
    to the stream when the process dies is appended after it restarts (server/events/)."""

    async def messages_since_id(self, after_id: int, limit: int) -> list[Message]:
        """Committed messages with id > after_id, in id order, at most `limit`."""

    async def last_message_id(self) -> int:
        """The id of the newest committed message (0: none): where a new stream begins."""

    async def event_cursors(self) -> dict[int, int]:
        """Stream partition -> the id of the last message appended to it (absent: none yet)."""

    async def advance_event_cursors(self, cursors: Mapping[int, int]) -> None:
        """Raise each partition's cursor to the id given (a cursor never moves back)."""

    async def messages_for_stream(
        self, gaps: Sequence[tuple[int, int]], after_id: int, limit: int
    ) -> StreamRead:
        """One read of the elected appender (server/events/): the committed messages whose id is
        in one of the inclusive ranges `gaps` (ids it saw missing before), and up to `limit`
        with id > after_id, all in id order; with the horizon that tells when a missing id is
        gone for good (`StreamRead`)."""

    def appender_lease(self) -> AppenderLease:
        """A new, unheld claim to be the database's one event appender (`AppenderLease`)."""


@dataclass(frozen=True, slots=True)
class StreamRead:
    """What `EventOutbox.messages_for_stream` read.

    `horizon` is None where ids become visible in id order (SQLite: one writer at a time), so an
    id missing below one read is never committed later. Where writers commit concurrently
    (PostgreSQL) an id may be allocated before a smaller-or-larger one commits: `horizon` is
    then `(xmin, xmax)`, the oldest transaction still running before the read, and the first
    transaction id not yet assigned after it. Every id missing from this read was allocated by
    a transaction below `xmax`; once a later read's `xmin` reaches it, that read shows what
    those transactions committed, and what it still lacks never comes.

    `positions`, where given, are what the read ordered by and what the horizon speaks of, one
    per message, in place of its id: a shard database numbers its commits with positions of its
    own, since the ids come from the catalog (storage/routing/shard_events.py)."""

    messages: list[Message]
    horizon: tuple[int, int] | None
    positions: list[int] | None = None

    def keys(self) -> list[int]:
        """Each message's position in the read's order: `positions`, else the ids."""
        return self.positions if self.positions is not None else [m.id for m in self.messages]


class AppenderLease(Protocol):
    """The claim to be the one process per database that appends to the event stream. Its
    calls block (run them on a worker thread) and never raise for the database being away:
    that is an answer of False."""

    def acquire(self) -> bool:
        """Take the lease if no one holds it: True if this object holds it now."""

    def held(self) -> bool:
        """Whether this object still holds the lease (False also if it cannot tell)."""

    def release(self) -> None:
        """Give the lease up (idempotent); a dead process's lease is released by the system."""


class Lifecycle(Protocol):
    async def open(self) -> None:
        """Open connections, apply pending schema migrations, start the backend's threads."""

    async def aclose(self) -> None:
        """Finish queued work, close connections, stop threads. Idempotent."""

    async def probe(self, busy_timeout: float) -> str | None:
        """Commit a write that changes nothing: None if it committed, else what failed.

        For readiness: a real commit proves what a rolled-back transaction would not (the write
        lock can be taken within `busy_timeout` seconds, the disk takes writes). It checks the
        database, not this object, so it also answers before `open()` and after `aclose()`.
        """


class Store(AccountStore, RoomStore, MessageStore, Lifecycle, Protocol):
    """Everything the server uses; `storage.open_store(url)` returns one."""


class AccountRecords(Protocol):
    """Account rows as a backend stores them, with no policy: `Accounts` decides what goes in
    (hashes only, expiry times) and what a row found means. Times are integer milliseconds
    since the Unix epoch."""

    async def insert_user(self, name: str, password_hash: str) -> User:
        """Raise `Conflict` if the name is taken."""

    async def password_hash_of(self, name: str) -> tuple[User, str] | None:
        """The user and the stored password hash, or None for an unknown name."""

    async def insert_token(
        self,
        user_id: int,
        token_hash: str,
        expires_at_ms: int,
        now_ms: int,
        session_id: str,
        device: str,
    ) -> None:
        """Store a token hash as session `session_id` (created and last used at `now_ms`);
        `NotFound` for an unknown user. The backend may drop the user's tokens that expired by
        `now_ms` (they can never be valid again)."""

    async def token_record(self, token_hash: str) -> tuple[User, int] | None:
        """The token's user and its `expires_at_ms`, or None for an unknown hash."""

    async def delete_token(self, token_hash: str) -> None: ...

    async def session_rows(self, user_id: int, now_ms: int) -> list[Session]:
        """The user's tokens with `expires_at > now_ms`, newest first."""

    async def delete_sessions(
        self, user_id: int, session_id: str | None, keep_hash: str | None
    ) -> list[str]:
        """Delete the user's session `session_id` (None: every one but `keep_hash`'s, all of
        them if that is None too); the deleted token hashes."""

    async def replace_password(
        self, user_id: int, password_hash: str, keep_hash: str | None
    ) -> list[str]:
        """In one transaction: store the new hash, delete every token of the user but
        `keep_hash`'s; the deleted token hashes."""

    async def update_display_name(self, user_id: int, display_name: str | None) -> None: ...

    async def profile_row(self, name: str) -> Profile | None: ...

    async def touch(self, sessions: Mapping[str, int], users: Mapping[int, int]) -> None:
        """`AccountStore.record_activity`'s rows, in one transaction."""


class Backend(AccountRecords, RoomStore, MessageStore, EventOutbox, Lifecycle, Protocol):
    """What a database backend implements (`storage.sqlite.SQLiteStore`); `open_store` adds
    the account policy and the checks every backend shares (`CompositeStore`), so a backend's
    calls receive `limit >= 0`."""

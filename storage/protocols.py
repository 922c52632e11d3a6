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

from protocol import ChatError, Message

UNREAD_WINDOW = 1000
"""Unread counts look at most this many seqs past a read cursor, so a count is at most this
(a client shows "999+") and costs one bounded index range however far behind a reader is."""


class StorageError(ChatError):
    """The store failed (our side's fault, not the peer's)."""


class Conflict(StorageError):
    """A unique name is already taken (user name, room name)."""


class NotFound(StorageError):
    """The named room or user does not exist."""


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
class Room:
    id: int
    name: str
    created_by: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message accepted by the server and not yet stored: the store assigns id, seq and ts."""

    room: str
    user_id: int
    user_name: str
    text: str
    client_id: str | None


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of storing one `NewMessage`.

    `duplicate` is True when (room, user, client_id) was already stored: `message` is then the
    original, and nothing new was written.
    """

    message: Message
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

    async def create_token(self, user_id: int, ttl_seconds: float) -> str:
        """A new random bearer token; only its hash is stored."""

    async def user_for_token(self, token: str) -> User | None:
        """The token's user, or None if unknown or expired."""

    async def grant_for_token(self, token: str) -> TokenGrant | None:
        """The token's user and expiry, or None if unknown or expired (an open WebSocket keeps
        the expiry to close itself when the token runs out)."""

    async def revoke_token(self, token: str) -> None: ...


class RoomStore(Protocol):
    """The catalog: rooms and who is a member."""

    async def create_room(self, name: str, created_by: int) -> Room:
        """Create a room and make its creator a member. Raise `Conflict` if the name is taken."""

    async def get_room(self, name: str) -> Room | None: ...

    async def list_rooms(self, limit: int = 1000) -> list[Room]: ...

    async def join_room(self, room: str, user_id: int) -> bool:
        """Make the user a member; True if newly joined. Raise `NotFound` for an unknown room."""

    async def leave_room(self, room: str, user_id: int) -> bool:
        """True if the user was a member."""

    async def is_member(self, room: str, user_id: int) -> bool: ...

    async def rooms_of(self, user_id: int) -> list[str]:
        """Names of the rooms the user is a member of."""

    async def members(self, room: str) -> list[str]:
        """User names of the room's members."""

    async def mark_read(self, room: str, user_id: int, seq: int) -> int:
        """Raise the user's read cursor in `room` to `seq`, never lower it; returns the cursor
        now stored. Raise `NotFound` for an unknown room. The caller bounds `seq` by the room's
        last seq (the catalog does not hold it once messages are sharded)."""

    async def read_cursors(self, user_id: int) -> dict[str, int]:
        """The user's read cursors, room name -> last seq read; rooms never marked are absent."""


class MessageStore(Protocol):
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
        and whether older ones exist. Keyset pagination on (room, seq); never OFFSET."""

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[Message]:
        """Messages with seq > after_seq, oldest first, at most `limit` (used by resume)."""

    async def last_seq(self, room: str) -> int:
        """The room's latest seq (0 when empty); `NotFound` for an unknown room."""

    async def last_seqs(self, rooms: Collection[str]) -> dict[str, int]:
        """Each room's latest seq, in one read however many rooms (a node's periodic check of
        its live rooms); unknown rooms are left out, not an error."""

    async def unread_count(self, room: str, read_seq: int, last_seq: int, user_id: int) -> int:
        """How many of the room's messages with seq in (read_seq, min(last_seq, read_seq +
        UNREAD_WINDOW)] were sent by users other than `user_id` (one bounded index range; 0
        for an unknown room). `last_seq` is what the caller read: the count covers no more."""


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
    those transactions committed, and what it still lacks never comes."""

    messages: list[Message]
    horizon: tuple[int, int] | None


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
        self, user_id: int, token_hash: str, expires_at_ms: int, now_ms: int
    ) -> None:
        """Store a token hash; `NotFound` for an unknown user. The backend may drop the user's
        tokens that expired by `now_ms` (they can never be valid again)."""

    async def token_record(self, token_hash: str) -> tuple[User, int] | None:
        """The token's user and its `expires_at_ms`, or None for an unknown hash."""

    async def delete_token(self, token_hash: str) -> None: ...


class Backend(AccountRecords, RoomStore, MessageStore, EventOutbox, Lifecycle, Protocol):
    """What a database backend implements (`storage.sqlite.SQLiteStore`); `open_store` adds
    the account policy and the checks every backend shares (`CompositeStore`), so a backend's
    calls receive `limit >= 0`."""

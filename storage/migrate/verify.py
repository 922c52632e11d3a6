"""Verification: the same summary computed from each side's rows, then compared.

Both sides run the same queries (`_source`'s, in the same order) through the same Python code,
so a difference in a summary is a difference in the data, never in how it was summed. Per room:
its row, message count, first and last seq, whether the seqs run 1, 2, 3, ... with no gap, an
ordered sha256 over its messages streamed in seq order, each the JSON array [room_id, seq, id,
user_id, user_name, text, client_id, ts, kind, target, edited_at, deleted], and the same over its
memberships. Accounts (users) and tokens are summed as whole tables. The source side reads the
pass's own snapshot; the target side reads one REPEATABLE READ snapshot.

Messages are read in id order (sequential on both sides; in (room, seq) order each row is an
index lookup, measured ~2.5x slower on 1M messages in SQLite); each chunk is sorted by (room,
seq) and hashed a run of one room at a time (`b"".join(map(encode, rows))`, no Python code per
row). A room's runs rise in seq order, so its digest is the seq-ordered one, and its seqs,
unique per room on both sides (a UNIQUE constraint in both schemas) and rising, run 1..n with no
gap exactly when the first is 1 and the last is the count.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Set
from dataclasses import dataclass, field, fields
from itertools import chain
from operator import itemgetter
from typing import Any

import msgspec

from storage.migrate._progress import Progress, ProgressFactory
from storage.migrate._source import (
    CHUNK_ROWS,
    MEMBERSHIPS,
    MESSAGES_BY_ID,
    ROOM_MESSAGES,
    ROOMS,
    TOKENS,
    USERS,
    Row,
    SourceSnapshot,
)
from storage.migrate._target import PgConnection

# (query with ? placeholders, its arguments) -> its rows, in lists
Reader = Callable[[str, tuple[Any, ...]], Generator[list[Row]]]

_encode = msgspec.json.Encoder().encode
_ROOM_SEQ = itemgetter(0, 1)
_MAX_LOCATED = 5  # rooms whose first differing seq is looked for


@dataclass(frozen=True, slots=True)
class TableSummary:
    rows: int
    digest: str


@dataclass(slots=True)
class RoomSummary:
    id: int
    name: str
    created_by: int
    created_at: int
    last_seq: int
    messages: int = 0
    first_seq: int | None = None
    max_seq: int | None = None
    contiguous: bool = True
    digest: str = hashlib.sha256().hexdigest()
    members: int = 0
    members_digest: str = hashlib.sha256().hexdigest()


@dataclass
class Summary:
    users: TableSummary
    tokens: TableSummary
    rooms: dict[int, RoomSummary]

    @property
    def messages(self) -> int:
        return sum(room.messages for room in self.rooms.values())

    @property
    def memberships(self) -> int:
        return sum(room.members for room in self.rooms.values())


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One thing that differs: `what` names it (a room by name and id), `details` say how."""

    what: str
    details: tuple[str, ...]
    room_id: int | None = None


@dataclass
class Verification:
    source: Summary
    target: Summary
    mismatches: list[Mismatch] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.mismatches


def verify(source: SourceSnapshot, conn: PgConnection, progress: ProgressFactory) -> Verification:
    """Summarise both sides and compare them; the target is read in one snapshot."""
    started = time.perf_counter()
    source_summary = summarise(source.chunks, progress, "verify source")
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        target_rows = pg_reader(conn)
        target_summary = summarise(target_rows, progress, "verify target")
        mismatches = compare(source_summary, target_summary)
        _locate(mismatches, source.chunks, target_rows)
    return Verification(source_summary, target_summary, mismatches, time.perf_counter() - started)


def pg_reader(conn: PgConnection) -> Reader:
    """A `Reader` on `conn` streaming through server-side cursors (inside a transaction)."""
    names = itertools.count()

    def read(query: str, args: tuple[Any, ...] = ()) -> Generator[list[Row]]:
        with conn.cursor(name=f"hibiki_verify_{next(names)}") as cursor:
            cursor.execute(query.replace("?", "%s"), args)
            while chunk := cursor.fetchmany(CHUNK_ROWS):
                yield chunk

    return read


def summarise(read: Reader, progress: ProgressFactory, what: str) -> Summary:
    users = _table(read(USERS, ()))
    tokens = _table(read(TOKENS, ()))
    rooms = {row[0]: RoomSummary(*row) for row in chain.from_iterable(read(ROOMS, ()))}
    _sum_memberships(chain.from_iterable(read(MEMBERSHIPS, ())), rooms)
    bar = progress(what, sum(room.last_seq for room in rooms.values()))
    try:
        _sum_messages(read(MESSAGES_BY_ID, ()), read, rooms, bar)
    finally:
        bar.close()
    return Summary(users, tokens, rooms)


def _table(chunks: Iterable[list[Row]]) -> TableSummary:
    digest = hashlib.sha256()
    count = 0
    for chunk in chunks:
        digest.update(b"".join(map(_encode, chunk)))
        count += len(chunk)
    return TableSummary(count, digest.hexdigest())


def _sum_memberships(rows: Iterable[Row], rooms: dict[int, RoomSummary]) -> None:
    for room_id, group in itertools.groupby(rows, key=itemgetter(0)):
        members = list(group)
        room = rooms.setdefault(room_id, RoomSummary(room_id, "?", 0, 0, 0))
        room.members = len(members)
        room.members_digest = hashlib.sha256(b"".join(map(_encode, members))).hexdigest()


class _RoomDigest:
    __slots__ = ("count", "digest", "first", "last")

    def __init__(self, first: int) -> None:
        self.digest = hashlib.sha256()
        self.count = 0
        self.first = first
        self.last = first - 1

    def add(self, rows: list[Row]) -> bool:
        """Hash `rows` (this room's, in seq order) after the earlier ones; False if they do not
        all come after them in seq order (then this digest is not the seq-ordered one)."""
        if rows[0][1] <= self.last:
            return False
        self.digest.update(b"".join(map(_encode, rows)))
        self.count += len(rows)
        self.last = rows[-1][1]
        return True


def _sum_messages(
    chunks: Iterable[list[Row]], read: Reader, rooms: dict[int, RoomSummary], bar: Progress
) -> None:
    """Hash id-ordered message chunks into each room's count, seqs and seq-ordered digest.

    Each chunk is sorted by (room, seq) and cut into runs of one room; a room's runs must come
    in rising seq order (they do when its seqs rise with its ids, as hibiki assigns them). A
    room where they do not is summed again from its own seq-ordered query.
    """
    digests: dict[int, _RoomDigest] = {}
    disordered: set[int] = set()
    for chunk in chunks:
        chunk.sort(key=_ROOM_SEQ)
        keys = list(map(itemgetter(0), chunk))
        start = 0
        while start < len(chunk):
            room_id = keys[start]
            end = bisect.bisect_right(keys, room_id, start)
            room = digests.get(room_id)
            if room is None:
                room = digests[room_id] = _RoomDigest(chunk[start][1])
            if room_id not in disordered and not room.add(chunk[start:end]):
                disordered.add(room_id)
            start = end
        bar.update(len(chunk))
    for room_id in disordered:
        del digests[room_id]
        for rows in read(ROOM_MESSAGES, (room_id,)):
            room = digests.setdefault(room_id, _RoomDigest(rows[0][1]))
            room.add(rows)
    for room_id, room in digests.items():
        summary = rooms.setdefault(room_id, RoomSummary(room_id, "?", 0, 0, 0))
        summary.messages, summary.first_seq, summary.max_seq = room.count, room.first, room.last
        summary.contiguous = room.first == 1 and room.last == room.count
        summary.digest = room.digest.hexdigest()


def compare(source: Summary, target: Summary) -> list[Mismatch]:
    """Every difference between the two summaries, and any room that is wrong on one side."""
    mismatches: list[Mismatch] = []
    for name in ("users", "tokens"):
        theirs, ours = getattr(source, name), getattr(target, name)
        if theirs != ours:
            mismatches.append(Mismatch(name, _differences(theirs, ours)))
    for room_id in sorted(source.rooms.keys() | target.rooms.keys()):
        details = _room_differences(source.rooms.get(room_id), target.rooms.get(room_id))
        if details:
            room = source.rooms.get(room_id) or target.rooms[room_id]
            mismatches.append(Mismatch(f"room {room.name!r} (id {room_id})", details, room_id))
    return mismatches


def _room_differences(source: RoomSummary | None, target: RoomSummary | None) -> tuple[str, ...]:
    if source is None:
        return ("on the target only",)
    if target is None:
        return ("missing on the target",)
    details = list(_differences(source, target, skip={"contiguous"}))
    for side, room in (("source", source), ("target", target)):
        if not room.contiguous:
            details.append(f"seqs not contiguous from 1 on the {side}")
        if room.last_seq != (room.max_seq or 0):
            details.append(f"last_seq {room.last_seq} but last message seq {room.max_seq}")
    return tuple(details)


def _differences(source: Any, target: Any, skip: Set[str] = frozenset()) -> tuple[str, ...]:
    details = []
    for f in fields(source):
        ours, theirs = getattr(source, f.name), getattr(target, f.name)
        if f.name not in skip and ours != theirs:
            details.append(f"{f.name}: source {_short(ours)}, target {_short(theirs)}")
    return tuple(details)


def _short(value: object) -> str:
    text = repr(value)
    return text[1:13] if isinstance(value, str) and len(value) == 64 else text


def _locate(mismatches: list[Mismatch], source_rows: Reader, target_rows: Reader) -> None:
    """Name the first differing seq of the first few rooms whose messages differ."""
    located = 0
    for index, mismatch in enumerate(mismatches):
        if mismatch.room_id is None or located >= _MAX_LOCATED:
            continue
        if not any(detail.startswith("digest") for detail in mismatch.details):
            continue
        located += 1
        args = (mismatch.room_id,)
        ours, theirs = source_rows(ROOM_MESSAGES, args), target_rows(ROOM_MESSAGES, args)
        try:
            seq = _first_difference(chain.from_iterable(ours), chain.from_iterable(theirs))
        finally:  # a server-side cursor left half-read is closed now, not at gc
            ours.close()
            theirs.close()
        if seq is not None:
            details = (*mismatch.details, f"first differing seq {seq}")
            mismatches[index] = dataclasses.replace(mismatch, details=details)


def _first_difference(ours: Iterator[Row], theirs: Iterator[Row]) -> int | None:
    """The seq of the first row that differs between two seq-ordered streams (None: equal)."""
    for mine, other in itertools.zip_longest(ours, theirs):
        if mine != other:
            seq: int = (mine if mine is not None else other)[1]
            return seq
    return None

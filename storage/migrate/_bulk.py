"""Bulk mode: a large copy runs with the messages table's secondary constraints set aside.

Each row COPYed into `messages` otherwise fires two foreign-key checks and updates three
indexes, one row at a time; rebuilding the unique indexes and validating the foreign keys once
after the copy does the same work in a few sorted passes (measured in scripts/bench_migrate.py).
So when a pass has more messages to copy than the target already holds (and at least
`BULK_MIN_ROWS`), the foreign keys, the UNIQUE (room_id, seq) constraint and the client_id
index are dropped before the chunks and re-created after them. The primary key stays: a row
copied twice still fails at once.

What was dropped is saved, as the catalog's own definitions (`pg_get_constraintdef`,
`pg_get_indexdef`), in the marker in the same transaction, so a pass cut off mid-copy leaves
its target restorable: the next pass restores them before anything else, and a verification
of a target whose constraints are set aside refuses to report it as good.
"""

from __future__ import annotations

import json

from storage.migrate._target import PgConnection

BULK_MIN_ROWS = 100_000

_CONSTRAINTS = (
    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE conrelid = 'messages'::regclass AND contype IN ('f', 'u') ORDER BY contype, conname"
)
_INDEXES = (
    "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
    " WHERE indrelid = 'messages'::regclass AND NOT indisprimary AND indexrelid NOT IN"
    " (SELECT conindid FROM pg_constraint WHERE conrelid = 'messages'::regclass)"
    " ORDER BY 1"
)


def wanted(to_copy: int, held: int, threshold: int = BULK_MIN_ROWS) -> bool:
    """Whether rebuilding beats maintaining: more to copy than is there, and enough of it."""
    return to_copy >= threshold and to_copy > held


def set_aside(conn: PgConnection) -> None:
    """Drop the secondary constraints and indexes of `messages`, saving how to re-create them."""
    with conn.transaction():
        constraints = conn.execute(_CONSTRAINTS).fetchall()
        indexes = conn.execute(_INDEXES).fetchall()
        restore = [
            f"ALTER TABLE messages ADD CONSTRAINT {name} {body}" for name, body in constraints
        ]
        restore += [body for _, body in indexes]
        conn.execute("UPDATE hibiki_migration SET set_aside = %s", (json.dumps(restore),))
        for name, _ in constraints:
            conn.execute(f"ALTER TABLE messages DROP CONSTRAINT {name}")
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")


def restore(conn: PgConnection) -> int:
    """Re-create what `set_aside` dropped, if anything is pending; returns how many."""
    with conn.transaction():
        row = conn.execute("SELECT set_aside FROM hibiki_migration FOR UPDATE").fetchone()
        if row is None or row[0] is None:
            return 0
        statements: list[str] = json.loads(row[0])
        for statement in statements:
            conn.execute(statement.encode())
        conn.execute("UPDATE hibiki_migration SET set_aside = NULL")
    conn.execute("ANALYZE messages")  # the planner's statistics for the bulk-loaded table
    return len(statements)


def pending(conn: PgConnection) -> bool:
    """Whether a cut-off pass left the target's constraints set aside."""
    exists = conn.execute("SELECT to_regclass('hibiki_migration') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        return False
    row = conn.execute("SELECT set_aside IS NOT NULL FROM hibiki_migration").fetchone()
    return bool(row and row[0])

"""An empty PostgreSQL database per test (on the machine's server at 127.0.0.1:5432, lent by
the test process's pool in tests/postgres.py and emptied after) and a SQLite source
filled through the real store. Without PostgreSQL these tests skip with the reason; under
CI=true they fail instead."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from storage import NewMessage, Store, User, open_store
from tests.postgres import ReusedDatabases

SCRYPT_N = 2**10  # fast for tests


@pytest.fixture
def pg_url(reused_databases: ReusedDatabases) -> Iterator[str]:
    """The URL of an empty database, emptied again (its connections ended) after the test."""
    with reused_databases.lend() as databases:
        yield databases.url("target")


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "hibiki.db"


@dataclass
class Chat:
    """What `populate` made, so a test can add to it through the same store."""

    store: Store
    users: list[User] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)

    async def say(self, room: str, count: int, *, tag: str = "m") -> None:
        """`count` messages in `room`, from each user in turn, every other with a client_id."""
        batch = [
            NewMessage(
                room,
                self.users[i % len(self.users)].id,
                self.users[i % len(self.users)].name,
                f"{tag} {i} in {room}: héllo ✓\nline two",
                f"{tag}-{room}-{i}" if i % 2 else None,
            )
            for i in range(count)
        ]
        for start in range(0, count, 500):
            await self.store.messages.append_batch(batch[start : start + 500])


def open_source(path: Path) -> Store:
    return open_store(path, scrypt_n=SCRYPT_N)


async def populate(store: Store, *, rooms: int = 3, messages: int = 200) -> Chat:
    """Users with tokens, rooms with members (one has left), messages in every room."""
    chat = Chat(store)
    for name in ("alice", "bob", "carol"):
        user = await store.accounts.create_user(name, "correct horse")
        chat.users.append(user)
        chat.tokens.append(await store.accounts.create_token(user.id, 3600))
    for r in range(rooms):
        room = f"room{r}"
        await store.rooms.create_room(room, chat.users[0].id)
        chat.rooms.append(room)
        for user in chat.users:
            await store.rooms.join_room(room, user.id)
        await chat.say(room, messages * (r + 1))
    await store.rooms.leave_room(chat.rooms[0], chat.users[2].id)
    return chat

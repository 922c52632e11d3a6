"""`CompositeStore` forwards `append_batch` straight to its messages part: the part set last."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import trio

from storage import Appended, CompositeStore, NewMessage, open_store
from storage.protocols import MessageStore

from ..conftest import STEP

SCRYPT_N = 2**10


class _CountingPart:
    """A messages part in front of the backend, like a replica router: counts what it forwards."""

    def __init__(self, inner: MessageStore) -> None:
        self.inner = inner
        self.batches = 0

    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        self.batches += 1
        return await self.inner.append_batch(batch)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_append_batch_goes_to_the_messages_part_set_after_construction(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "hibiki.db", scrypt_n=SCRYPT_N)
    assert isinstance(store, CompositeStore)
    part = _CountingPart(store.messages)
    store.messages = cast(MessageStore, part)  # the rest forwarded by __getattr__
    with trio.fail_after(STEP):
        async with store:
            alice = await store.create_user("alice", "pw")
            await store.create_room("lobby", alice.id)
            new = NewMessage(
                room="lobby", user_id=alice.id, user_name="alice", text="hi", client_id=None
            )
            (appended,) = await store.append_batch([new])
            assert store.messages is cast(MessageStore, part)
            assert part.batches == 1
            assert (appended.message.seq, appended.duplicate) == (1, False)
            assert await store.history("lobby", None, 10) == ([appended.message], False)

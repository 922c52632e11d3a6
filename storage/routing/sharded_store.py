"""A `Store` whose messages are sharded: the catalog on the primary, messages on the shards.

`open_store(url, shards=[...])` builds one. The catalog's own `rooms.last_seq` is never moved
on (each room's counter is on its shard), so the room reads that report a `last_seq` ask the
shards for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from storage import passwords
from storage.composite import CompositeStore
from storage.protocols import Backend, NewMessage, Room, RoomStore
from storage.room_admin import Member
from storage.routing.sharded import ShardedMessageStore
from storage.routing.sharded_parts import PartListener


class ShardedRooms:
    """`RoomStore` of the primary, with each room's `last_seq` read from its shard."""

    def __init__(self, rooms: RoomStore, messages: ShardedMessageStore) -> None:
        self._rooms = rooms
        self._messages = messages

    async def get_room(self, name: str) -> Room | None:
        room = await self._rooms.get_room(name)
        if room is None:
            return None
        return replace(room, last_seq=await self._messages.last_seq(name))

    async def list_rooms(self, limit: int = 1000) -> list[Room]:
        return await self._messages.with_last_seqs(await self._rooms.list_rooms(limit))

    async def leave_room(self, room: str, user_id: int) -> bool:
        return await self._rooms.leave_room(room, user_id)

    async def is_member(self, room: str, user_id: int) -> bool:
        return await self._rooms.is_member(room, user_id)

    async def rooms_of(self, user_id: int) -> list[str]:
        return await self._rooms.rooms_of(user_id)

    async def members(self, room: str) -> list[str]:
        return await self._rooms.members(room)

    async def mark_read(self, room: str, user_id: int, seq: int) -> int:
        # The user's cursor, on the catalog: it never moves with the room's shard.
        return await self._rooms.mark_read(room, user_id, seq)

    async def read_cursors(self, user_id: int) -> dict[str, int]:
        return await self._rooms.read_cursors(user_id)

    # Room administration: the catalog's, forwarded (room reads add the shard's last_seq).
    async def create_room(
        self, name: str, created_by: int, private: bool = False, topic: str = ""
    ) -> Room:
        return await self._rooms.create_room(name, created_by, private, topic)

    async def join_room(self, room: str, user_id: int) -> bool:
        return await self._rooms.join_room(room, user_id)

    async def add_member(self, room: str, user_id: int) -> bool:
        return await self._rooms.add_member(room, user_id)

    async def update_room(self, room: str, topic: str | None, slow_mode: int | None) -> Room | None:
        updated = await self._rooms.update_room(room, topic, slow_mode)
        if updated is None:
            return None
        return replace(updated, last_seq=await self._messages.last_seq(room))

    async def role_of(self, room: str, user_id: int) -> str | None:
        return await self._rooms.role_of(room, user_id)

    async def roles_of(self, user_id: int) -> dict[str, str]:
        return await self._rooms.roles_of(user_id)

    async def member_roles(self, room: str) -> list[Member]:
        return await self._rooms.member_roles(room)

    async def set_role(self, room: str, user_id: int, role: str) -> bool:
        return await self._rooms.set_role(room, user_id, role)

    async def transfer_owner(self, room: str, from_id: int, to_id: int) -> bool:
        return await self._rooms.transfer_owner(room, from_id, to_id)

    async def ban(self, room: str, user_id: int, by: int) -> bool:
        return await self._rooms.ban(room, user_id, by)

    async def unban(self, room: str, user_id: int) -> bool:
        return await self._rooms.unban(room, user_id)


class ShardedStore(CompositeStore):
    """`CompositeStore` over the primary `backend`, its messages on `sharded`."""

    def __init__(
        self, backend: Backend, sharded: ShardedMessageStore, *, scrypt_n: int = passwords.DEFAULT_N
    ) -> None:
        super().__init__(backend, scrypt_n=scrypt_n)
        self.sharded = sharded
        self.messages = sharded
        self.rooms = ShardedRooms(backend, sharded)

    async def open(self) -> None:
        await super().open()
        try:
            await self.sharded.open()
        except BaseException:
            await self.backend.aclose()
            raise

    async def aclose(self) -> None:
        await self.sharded.aclose()
        await super().aclose()

    async def append_batch_parts(self, batch: Sequence[NewMessage], parts: PartListener) -> None:
        """`append_batch`, each shard's part told to `parts` as it commits (the writer's
        per-shard acks, server/persist/shard_commit.py)."""
        await self.sharded.append_batch_parts(batch, parts)

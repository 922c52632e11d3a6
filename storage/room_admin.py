"""The store's room administration calls (issue #15): visibility, topic, slow mode, roles, bans.

On the catalog (`RoomStore`): a room's settings and who holds which role are the room's, never
a shard's. Policy (who may do what) is the server's (server/chat/room_rules.py); the store
keeps the rows consistent: one owner per room who is a member, bans that keep a user out of
`join_room` and `add_member` atomically, and private rooms that `join_room` treats as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from storage.protocols import Room

ROLE_OWNER = "owner"
ROLE_ADMIN = "admin"
ROLE_MEMBER = "member"
ROLES = (ROLE_OWNER, ROLE_ADMIN, ROLE_MEMBER)
PUBLIC = "public"
PRIVATE = "private"
MAX_TOPIC = 300  # characters
MAX_SLOW_MODE = 3600  # seconds


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a room and their role there (`ROLES`)."""

    name: str
    role: str


class RoomAdmin(Protocol):
    """Room settings, roles and bans, beside `RoomStore`'s membership calls."""

    async def create_room(
        self, name: str, created_by: int, private: bool = False, topic: str = ""
    ) -> Room:
        """Create a room owned by its creator, who is its first member (role owner). Raise
        `Conflict` if the name is taken. The caller checks `topic` (at most `MAX_TOPIC`)."""

    async def join_room(self, room: str, user_id: int) -> bool:
        """Make the user a member (role member); True if newly joined. Raise `NotFound` for an
        unknown room, and for a private room the user is not a member of (a private room is
        joined only by invitation: `add_member`); `Banned` if the user is banned from it."""

    async def add_member(self, room: str, user_id: int) -> bool:
        """An invitation: make the user a member of any room, private or not; True if newly
        a member. Raise `NotFound` for an unknown room or user, `Banned` if banned."""

    async def update_room(self, room: str, topic: str | None, slow_mode: int | None) -> Room | None:
        """Set what is given (None: leave it); the room as it now is, None if unknown."""

    async def role_of(self, room: str, user_id: int) -> str | None:
        """The user's role in `room`, or None if not a member (or no such room)."""

    async def roles_of(self, user_id: int) -> dict[str, str]:
        """Room name -> the user's role there, for every room the user is a member of."""

    async def member_roles(self, room: str) -> list[Member]:
        """The room's members with their roles, by name ([] for an unknown room)."""

    async def set_role(self, room: str, user_id: int, role: str) -> bool:
        """Make a member `ROLE_ADMIN` or `ROLE_MEMBER` (never the owner: `transfer_owner`);
        False if the user is not a member or is the owner."""

    async def transfer_owner(self, room: str, from_id: int, to_id: int) -> bool:
        """In one transaction: `to_id` (a member) becomes the owner, `from_id` (the owner) an
        admin. False, changing nothing, if `to_id` is not a member or `from_id` not the owner."""

    async def ban(self, room: str, user_id: int, by: int) -> bool:
        """In one transaction: end the user's membership and bar them from the room; True if
        they were a member. Raise `NotFound` for an unknown room or user."""

    async def unban(self, room: str, user_id: int) -> bool:
        """Lift a ban; True if the user was banned. They are not made a member again."""

"""Room id -> subscribed connections; `publish` appends one shared frame to each, never awaits."""

from __future__ import annotations

from collections.abc import Callable

from protocol import Presence, encode

from .connection import WsConnection
from .frames import text_frame

Delivered = Callable[[int], None]


class RoomHub:
    """Live fan-out for this process.

    A connection catching up on a room (resume) is *held*: live frames for it are kept aside with
    their seq and released after the replay, skipping what the replay already carried, so the
    client sees every seq once and in order.
    """

    def __init__(self, on_delivered: Delivered | None = None) -> None:
        self._subs: dict[str, dict[WsConnection, None]] = {}
        self._held: dict[str, dict[WsConnection, list[tuple[int, bytes]]]] = {}
        self._online: dict[str, dict[str, int]] = {}
        self._on_delivered = on_delivered

    def publish(self, room: str, frame: bytes, seq: int = 0, exclude: object = None) -> int:
        """Queue `frame` (already framed) to every subscriber of `room`; returns how many."""
        subs = self._subs.get(room)
        count = 0
        if subs:
            for conn in subs:
                if conn is not exclude:
                    conn.enqueue(frame)
            count = len(subs) - (exclude in subs)
        held = self._held.get(room)
        if held:
            for backlog in held.values():
                backlog.append((seq, frame))
        if self._on_delivered is not None and count:
            self._on_delivered(count)
        return count

    def subscribe(self, room: str, conn: WsConnection, *, hold: bool = False) -> None:
        """Add `conn` to the room (held if it is about to replay missed messages)."""
        if hold:
            self._held.setdefault(room, {})[conn] = []
        else:
            self._subs.setdefault(room, {})[conn] = None
        conn.rooms.add(room)
        users = self._online.setdefault(room, {})
        count = users.get(conn.user_name, 0)
        users[conn.user_name] = count + 1
        if count == 0:
            self._announce(room, conn, "online")

    def release(self, room: str, conn: WsConnection, after_seq: int) -> None:
        """End a hold: deliver the live frames the replay did not already cover, then go live."""
        held = self._held.get(room)
        backlog = held.pop(conn, None) if held is not None else None
        if held is not None and not held:
            del self._held[room]
        if backlog is None:
            return
        for seq, frame in backlog:
            if seq == 0 or seq > after_seq:
                conn.enqueue(frame)
        self._subs.setdefault(room, {})[conn] = None

    def unsubscribe(self, room: str, conn: WsConnection) -> None:
        if conn.rooms is not None:
            conn.rooms.discard(room)
        found = False
        subs = self._subs.get(room)
        if subs is not None and conn in subs:
            del subs[conn]
            found = True
            if not subs:
                del self._subs[room]
        held = self._held.get(room)
        if held is not None and conn in held:
            del held[conn]
            found = True
            if not held:
                del self._held[room]
        if not found:
            return
        users = self._online[room]
        count = users[conn.user_name] - 1
        if count:
            users[conn.user_name] = count
        else:
            del users[conn.user_name]
            if not users:
                del self._online[room]
            self._announce(room, conn, "offline")

    def unsubscribe_all(self, conn: WsConnection) -> None:
        for room in list(conn.rooms):
            self.unsubscribe(room, conn)

    def online(self, room: str) -> list[str]:
        return sorted(self._online.get(room, ()))

    def subscriber_count(self, room: str) -> int:
        return len(self._subs.get(room, ())) + len(self._held.get(room, ()))

    def _announce(self, room: str, conn: WsConnection, status: str) -> None:
        event = Presence(room=room, user=conn.user_name, status=status)  # type: ignore[arg-type]
        self.publish(room, text_frame(encode(event)), exclude=conn)

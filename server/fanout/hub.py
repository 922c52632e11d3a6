"""Room id -> subscribed connections; `publish` never awaits and never touches a socket.

Within one flush cycle a room's frames go into one shared `Segment`: the first publish of the
cycle appends the segment to every subscriber's backlog; later ones only append to the segment.
So a batch of B messages to N subscribers costs N appends and N sends, not B x N.
"""

from __future__ import annotations

from protocol import Presence, encode
from server.transport.connection import Segment, WsConnection
from server.transport.flusher import Flusher
from server.transport.frames import text_frame


class RoomHub:
    """Live fan-out for this process.

    A connection catching up on a room (resume) is *held*: live frames for it are kept aside with
    their seq and released after the replay, skipping what the replay already carried, so the
    client sees every seq once and in order.
    """

    def __init__(self, flusher: Flusher) -> None:
        self._flusher = flusher
        self._subs: dict[str, dict[WsConnection, None]] = {}
        self._open: dict[str, Segment] = {}
        self._held: dict[str, dict[WsConnection, list[tuple[int, bytes]]]] = {}
        self._online: dict[str, dict[str, int]] = {}
        self.deliveries = 0

    def publish(self, room: str, frame: bytes, seq: int = 0) -> None:
        """Queue `frame` (already framed) to every subscriber of `room`."""
        subs = self._subs.get(room)
        if subs:
            segment = self._open.get(room)
            if segment is None or segment.data is not None:
                segment = self._open[room] = Segment()
                dirty = self._flusher.dirty
                for conn in subs:
                    if not conn.closing:
                        conn.pending.append(segment)
                        if not conn.dirty:
                            conn.dirty = True
                            dirty.append(conn)
                self._flusher.wake()
            segment.frames.append(frame)
            self.deliveries += len(subs)
        held = self._held.get(room)
        if held:
            for backlog in held.values():
                backlog.append((seq, frame))

    def publish_except(self, room: str, frame: bytes, exclude: WsConnection) -> None:
        """Queue `frame` to every subscriber but `exclude` (typing, presence); not a hot path."""
        self._close_segment(room)
        for conn in self._subs.get(room, ()):
            if conn is not exclude:
                conn.enqueue(frame)
                self.deliveries += 1
        for other, backlog in self._held.get(room, {}).items():
            if other is not exclude:
                backlog.append((0, frame))

    def subscribe(self, room: str, conn: WsConnection, *, hold: bool = False) -> None:
        """Add `conn` to the room (held if it is about to replay missed messages)."""
        if hold:
            self._held.setdefault(room, {})[conn] = []
        else:
            self._close_segment(room)
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
        self._close_segment(room)
        self._subs.setdefault(room, {})[conn] = None

    def unsubscribe(self, room: str, conn: WsConnection) -> None:
        conn.rooms.discard(room)
        found = False
        subs = self._subs.get(room)
        if subs is not None and conn in subs:
            self._close_segment(room)
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

    def _close_segment(self, room: str) -> None:
        """The subscriber set changes: later frames must go into a segment the new set shares."""
        self._open.pop(room, None)

    def _announce(self, room: str, conn: WsConnection, status: str) -> None:
        event = Presence(room=room, user=conn.user_name, status=status)  # type: ignore[arg-type]
        self.publish_except(room, text_frame(encode(event)), conn)

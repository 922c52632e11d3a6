"""Room id -> subscribed connections; `publish` never awaits and never touches a socket.

Within one flush cycle a room's frames go into one shared `Segment`: the first publish of the
cycle appends the segment to every subscriber's backlog; later ones only append to the segment.
So a batch of B messages to N subscribers costs N appends and N sends, not B x N.

The hub is fed by the room-event bus alone (server.fanout.bus): committed messages go through
the sequencer first, so each room's subscribers get them in seq order, once; typing and presence
go straight to the subscribers. Presence itself is counted by an `OnlineUsers` directory, which
the hub tells of every subscription change.
"""

from __future__ import annotations

import trio

from server.fanout.bus import ConnId, LocalBus, RoomBus
from server.fanout.presence import LocalOnlineUsers, OnlineUsers
from server.fanout.sequencer import MessageSource, Sequencer
from server.fanout.subscriber import Subscriber
from server.transport.frames import text_frame
from server.transport.outbound import FlushQueue, OutboundBuffer, Segment, append_to_all


class RoomHub:
    """Live fan-out for this process.

    A connection catching up on a room (resume) is *held*: live frames for it are kept aside with
    their seq and released after the replay, skipping what the replay already carried, so the
    client sees every seq once and in order.
    """

    def __init__(
        self,
        flusher: FlushQueue,
        *,
        bus: RoomBus | None = None,
        presence: OnlineUsers | None = None,
        backfill: MessageSource | None = None,
    ) -> None:
        """`bus`: told which rooms have subscribers here (the caller attaches the hub to it);
        without one the hub feeds itself through a private `LocalBus`. `backfill`: where seq
        gaps are filled from (None: skipped after the hold)."""
        self._flusher = flusher
        # Room -> subscriber -> its outbound buffer (the values are what publish walks).
        self._subs: dict[str, dict[Subscriber, OutboundBuffer]] = {}
        self._open: dict[str, Segment] = {}
        self._held: dict[str, dict[Subscriber, list[tuple[int, bytes]]]] = {}
        # Held connections whose replay reached a seq the sequencer has not delivered yet: they
        # stay held until it has (room -> conn -> the seq their replay reached).
        self._waiting: dict[str, dict[Subscriber, int]] = {}
        if bus is None:
            local = LocalBus()
            local.attach_hub(self)
            bus = local
        self._bus = bus
        self._presence = LocalOnlineUsers(bus) if presence is None else presence
        self._sequencer = Sequencer(self._deliver, backfill)
        self.deliveries = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the sequencer's gap fillers (needed once a bus can reorder or lose messages)."""
        await self._sequencer.run(task_status=task_status)

    @property
    def gaps_detected(self) -> int:
        return self._sequencer.gaps_detected

    @property
    def messages_backfilled(self) -> int:
        return self._sequencer.messages_backfilled

    async def covered(self, room: str) -> None:
        """Await before reading `room` from the store after subscribing (see `RoomBus.covered`)."""
        await self._bus.covered(room)

    def catch_up(self, room: str, last_seq: int) -> None:
        """The store says `room` is at `last_seq`: deliver what did not come (from the store)."""
        self._sequencer.catch_up(room, last_seq)

    def idle_rooms(self) -> list[tuple[str, int]]:
        """Live rooms with no message since the last call, with their delivered seq."""
        return self._sequencer.idle_rooms()

    def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        """A committed message (its encoded event) from the bus: in seq order, to everyone."""
        self._sequencer.offer(room, seq, payload)

    def _deliver(self, room: str, seq: int, payload: bytes) -> None:
        self.publish(room, text_frame(payload), seq)

    def publish_event(self, room: str, payload: bytes, exclude: ConnId) -> None:
        """Typing or presence from the bus, to every subscriber but connection `exclude`."""
        self.publish_except(room, text_frame(payload), exclude)

    def publish(self, room: str, frame: bytes, seq: int = 0) -> None:
        """Queue `frame` (already framed) to every subscriber of `room`."""
        subs = self._subs.get(room)
        if subs:
            segment = self._open.get(room)
            if segment is None or segment.data is not None:
                segment = self._open[room] = Segment()
                append_to_all(subs.values(), segment, self._flusher.dirty)
                self._flusher.wake()
            segment.frames.append(frame)
            self.deliveries += len(subs)
        held = self._held.get(room)
        if held:
            for backlog in held.values():
                backlog.append((seq, frame))
            if seq and room in self._waiting:
                self._settle(room, seq)

    def publish_except(self, room: str, frame: bytes, exclude: ConnId) -> None:
        """Queue `frame` to every subscriber but `exclude` (typing, presence); not a hot path."""
        self._close_segment(room)
        for conn, buf in self._subs.get(room, {}).items():
            if conn.conn_id != exclude:
                buf.append(frame)
                self.deliveries += 1
        waiting = self._waiting.get(room, {})
        for other, backlog in self._held.get(room, {}).items():
            if other.conn_id == exclude:
                continue
            if other in waiting:
                other.out.append(frame)  # it has its replay: events need not wait
            else:
                backlog.append((0, frame))

    def subscribe(self, room: str, conn: Subscriber, *, hold: bool = False) -> None:
        """Add `conn` to the room (held if it is about to replay missed messages)."""
        if room not in self._subs and room not in self._held:
            self._sequencer.track(room)
            self._bus.follow(room)
        if hold:
            self._held.setdefault(room, {})[conn] = []
        else:
            self._close_segment(room)
            self._subs.setdefault(room, {})[conn] = conn.out
        conn.rooms.add(room)
        self._presence.arrived(room, conn.user_name, conn.conn_id)

    def release(self, room: str, conn: Subscriber, after_seq: int) -> None:
        """End a hold: deliver the live frames the replay did not already cover, then go live.

        If the sequencer has not yet delivered up to `after_seq`, it may still deliver seqs the
        replay carried: a message committed before the replay's read but published after it, or
        a gap filled from the room's floor for its other subscribers. Then the connection stays
        held (events go straight to it) until a seq past `after_seq` is delivered."""
        held = self._held.get(room)
        backlog = held.pop(conn, None) if held is not None else None
        if held is not None and not held:
            del self._held[room]
        if backlog is None:
            return
        for seq, frame in backlog:
            if seq == 0 or seq > after_seq:
                conn.out.append(frame)
        if after_seq > max(self._sequencer.delivered(room), 0):
            self._held.setdefault(room, {})[conn] = []
            self._waiting.setdefault(room, {})[conn] = after_seq
            return
        self._close_segment(room)
        self._subs.setdefault(room, {})[conn] = conn.out

    def _settle(self, room: str, seq: int) -> None:
        """`seq` was delivered: release the waiting connections whose replay it is past."""
        waiting = self._waiting[room]
        for conn, after_seq in list(waiting.items()):
            if seq > after_seq:
                del waiting[conn]
                self.release(room, conn, after_seq)
        if not waiting:
            del self._waiting[room]

    def unsubscribe(self, room: str, conn: Subscriber) -> None:
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
            waiting = self._waiting.get(room)
            if waiting is not None and waiting.pop(conn, None) is not None and not waiting:
                del self._waiting[room]
        if not found:
            return
        if room not in self._subs and room not in self._held:
            self._sequencer.untrack(room)
            self._bus.unfollow(room)
        self._presence.departed(room, conn.user_name, conn.conn_id)

    def unsubscribe_all(self, conn: Subscriber) -> None:
        for room in list(conn.rooms):
            self.unsubscribe(room, conn)

    def _close_segment(self, room: str) -> None:
        """The subscriber set changes: later frames must go into a segment the new set shares."""
        self._open.pop(room, None)

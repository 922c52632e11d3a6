"""Each live room's messages in seq order, once: what the bus hands the hub may not be.

One process's writer publishes in commit order, but a bus between processes (Redis pub/sub)
reorders, repeats and loses messages, and even here the HTTP import and the writer race from
their commits to their publishes. So per room with local subscribers this keeps the last seq
delivered: an older or repeated seq is dropped; a gap is held for `GAP_HOLD`, in case the late
message is only late, and then filled from the store, which is the source of truth.

A room's tracking starts at its first local subscriber and ends with its last. Its baseline is
the first message seen after that, not the store's `last_seq`: a batch the writer has committed
but not yet published is already counted in `last_seq`, so that baseline would drop the batch
for every live subscriber. Subscribers lose nothing by the first-seen baseline: each one's
resume or `joined` reads the store *after* its (held) subscription, and the hub's hold/release
covers the overlap by seq.

Between processes that baseline alone could miss messages a room's subscribers need: a message a
remote node published before this process's subscription to the room's channel was in force, or
lost on the way, is never offered. So a networked bus tells the sequencer what the store says
(`catch_up(room, last_seq)`): once a room's subscription is in force (a reader then notes the
`last_seq` it is about to read from as the room's *floor*), after every reconnect, and for idle
rooms now and then. Before the first message the floor only bounds where a gap starts (a first
message above floor + 1 opens a gap from the floor); afterwards anything the store has beyond
the delivered seq is filled from the store, after the usual hold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import trio

from protocol import RoomEntry, encode
from storage import StorageError

_log = logging.getLogger(__name__)

# How long a gap waits for its late message before the store is read. Between the commits of two
# publishers and their publishes (two writers, a writer and an HTTP import, two processes over
# pub/sub) lie at most a few milliseconds of scheduling and transport even on a loaded loop;
# 50 ms covers that many times over, and keeps a message that really was lost well under the
# ~100 ms a reader notices. In one process no gap waits this long: none is ever opened.
GAP_HOLD = 0.050  # seconds
BACKFILL_PAGE = 500  # messages per store read while filling a gap (resume reads pages of 500)

Deliver = Callable[[str, int, bytes], None]  # (room, seq, encoded message event)


class MessageSource(Protocol):
    """Where a gap is filled from: the part of the message store the sequencer reads."""

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[RoomEntry]:
        """Every entry of the room's seq (messages, edits, deletes), as `MessageStore` does."""


class _Room:
    __slots__ = ("based", "checked", "delivered", "filling", "floor", "held", "opened_at", "target")

    def __init__(self) -> None:
        self.based = False  # a baseline is set: the first message was seen (or a catch-up ran)
        self.delivered = 0  # the last seq delivered
        self.held: dict[int, bytes] = {}  # seq -> payload, all above delivered + 1
        self.opened_at = 0.0  # trio clock: when the current gap was seen
        self.filling = False  # a filler task is waiting on (or reading for) this room
        self.floor = -1  # the store's last_seq when a reader read it after subscribing; -1: none
        self.target = 0  # the store has messages up to here: fill up to it
        self.checked = -1  # `delivered` at the last idle check


class Sequencer:
    """Orders one process's live rooms; `offer` never awaits, the filler tasks run in `run`."""

    def __init__(
        self, deliver: Deliver, source: MessageSource | None, *, hold: float = GAP_HOLD
    ) -> None:
        self._deliver = deliver
        self._source = source  # None: a gap is skipped after the hold (hubs built without one)
        self._hold = hold
        self._rooms: dict[str, _Room] = {}
        self._nursery: trio.Nursery | None = None
        self._stopped = False  # `run` has ended: the process is stopping
        self.gaps_detected = 0
        self.messages_backfilled = 0
        self.dropped = 0  # older or repeated seqs

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the gap fillers until cancelled (they are cancelled with it)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                self._stopped = True

    def track(self, room: str) -> None:
        """`room` has a local subscriber: order its messages from the next one seen."""
        if room not in self._rooms:
            self._rooms[room] = _Room()

    def untrack(self, room: str) -> None:
        """`room`'s last local subscriber left: forget its seq and anything held."""
        self._rooms.pop(room, None)

    def tracking(self, room: str) -> bool:
        return room in self._rooms

    def delivered(self, room: str) -> int:
        """The last seq delivered in `room`; -1 before its first (any seq may still come)."""
        state = self._rooms.get(room)
        return state.delivered if state is not None and state.based else -1

    def offer(self, room: str, seq: int, payload: bytes) -> None:
        """A message from the bus: deliver it now, later (after a gap) or never (old, repeated
        or nobody here subscribed)."""
        state = self._rooms.get(room)
        if state is None:
            return
        if not state.based:
            state.based = True
            if state.floor < 0 or seq <= state.floor + 1:
                state.delivered = seq  # the first since tracking began: the baseline
                self._deliver(room, seq, payload)
                return
            state.delivered = state.floor  # seqs above the floor were missed: a gap
        if seq == state.delivered + 1 and not state.held:  # in order: the common case
            state.delivered = seq
            self._deliver(room, seq, payload)
        elif seq <= state.delivered or seq in state.held:
            self.dropped += 1
        else:
            state.held[seq] = payload
            self._release_held(room, state)
            if state.held and not state.filling:
                self._open_gap(room, state)

    def catch_up(self, room: str, last_seq: int) -> None:
        """The store says `room` is at `last_seq` (read once the bus covers the room, after a
        reconnect, or for an idle room): fill what was not delivered, after the hold. Before the
        room's first message this only lowers its floor."""
        state = self._rooms.get(room)
        if state is None:
            return
        if not state.based:
            if state.floor < 0 or last_seq <= state.floor:
                state.floor = last_seq
                return
            state.based = True
            state.delivered = state.floor
        if last_seq > state.delivered:
            state.target = max(state.target, last_seq)
            if not state.filling:
                self._open_gap(room, state)

    def idle_rooms(self) -> list[tuple[str, int]]:
        """Rooms that delivered nothing since the last call, with their delivered seq (the tail
        check compares it with the store's)."""
        idle = []
        for room, state in self._rooms.items():
            if state.checked == state.delivered and not state.filling:
                idle.append((room, state.delivered))
            state.checked = state.delivered
        return idle

    def _release_held(self, room: str, state: _Room) -> None:
        """Deliver held messages for as long as they follow on without a hole."""
        held = state.held
        while held:
            payload = held.pop(state.delivered + 1, None)
            if payload is None:
                return
            state.delivered += 1
            self._deliver(room, state.delivered, payload)

    def _open_gap(self, room: str, state: _Room) -> None:
        if self._nursery is None:
            if self._stopped:
                return  # shutting down: what is held is never delivered, like what is unsent
            raise RuntimeError("a seq gap needs the sequencer's filler: start Sequencer.run first")
        self.gaps_detected += 1
        state.opened_at = trio.current_time()
        state.filling = True
        self._nursery.start_soon(self._fill, room, state)

    async def _fill(self, room: str, state: _Room) -> None:
        """Wait out the hold, then read the missing seqs from the store, until nothing is held."""
        try:
            await trio.sleep_until(state.opened_at + self._hold)
            while self._rooms.get(room) is state and (state.held or state.delivered < state.target):
                await self._backfill(room, state)
        finally:
            state.filling = False

    async def _backfill(self, room: str, state: _Room) -> None:
        """One store read towards the lowest held seq; skip the hole if it brings nothing."""
        upto = min(state.held) if state.held else state.target + 1
        missing = upto - state.delivered - 1
        page: list[RoomEntry] = []
        if self._source is not None:
            try:
                page = await self._source.messages_after(
                    room, state.delivered, min(missing, BACKFILL_PAGE)
                )
            except StorageError:
                _log.exception("seq gap not filled: the store failed", extra={"room": room})
        if self._rooms.get(room) is not state or (
            not state.held and state.delivered >= state.target
        ):
            return  # the room's last subscriber left, or the late messages came, meanwhile
        before = state.delivered
        for message in page:
            if message.seq == state.delivered + 1:  # not if a late live one came meanwhile
                state.delivered = message.seq
                state.held.pop(message.seq, None)
                self.messages_backfilled += 1
                self._deliver(room, message.seq, encode(message))
        if state.delivered == before:
            # Nothing to fill the hole with: never stall the room behind it.
            upto = min(state.held) if state.held else state.target + 1
            _log.warning(
                "seq gap skipped",
                extra={"room": room, "after_seq": before, "missing": upto - before - 1},
            )
            state.delivered = upto - 1
        self._release_held(room, state)

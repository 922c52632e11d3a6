"""The Redis bus's membership-channel envelopes (issue #15): a new room (kind 4) and a user event
(kind 5, read state) keep their own kinds, survive encode and decode, and each reaches its own
`MembershipEvents` call on the receiving process (no Redis needed: the link is never run)."""

from __future__ import annotations

import os
import time

from server.fanout.bus import NO_CONN, ConnId
from server.redis.bus import (
    KIND_MEMBERSHIP,
    KIND_ROOM_CREATED,
    KIND_USER,
    RedisBus,
    decode_envelope,
    encode_envelope,
)
from server.redis.link import RedisLink


class NoStore:
    async def last_seq(self, room: str) -> int:
        raise AssertionError("nothing is read in this test")

    async def last_seqs(self, rooms: object) -> dict[str, int]:
        raise AssertionError("nothing is read in this test")


class Recording:
    """`MembershipEvents` that notes each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def membership_changed(self, user_id: int, room: str, member: bool, origin: ConnId) -> None:
        self.calls.append(("membership", user_id, room, member, origin))

    def room_created(self, room: str, creator: int) -> None:
        self.calls.append(("room_created", room, creator))

    def user_event(self, user_id: int, payload: bytes, origin: ConnId) -> None:
        self.calls.append(("user_event", user_id, payload, origin))


def test_the_user_event_has_a_kind_of_its_own() -> None:
    assert len({KIND_MEMBERSHIP, KIND_ROOM_CREATED, KIND_USER}) == 3
    assert KIND_USER == 5


def test_each_membership_channel_envelope_reaches_its_own_call() -> None:
    link = RedisLink("redis://127.0.0.1:1/0", namespace="t")
    bus = RedisBus(link, NoStore())
    handler = Recording()
    bus.attach_memberships(handler)
    other, now = os.urandom(16), time.time()
    unread = b'{"type":"unread","room":"r","read_seq":3,"last_seq":5,"count":2}'
    room_created = encode_envelope(KIND_ROOM_CREATED, other, "random", 7, 0, b"", now)
    user_event = encode_envelope(KIND_USER, other, "", 9, 42, unread, now)
    assert decode_envelope(room_created) == (KIND_ROOM_CREATED, other, now, 7, 0, "random", b"")
    assert decode_envelope(user_event) == (KIND_USER, other, now, 9, 42, "", unread)

    channel = link.key("membership", tag="m").encode()
    for envelope in (room_created, user_event):
        bus._received(channel, envelope)  # what the link hands the bus from Redis
    # The origin's connection ids mean nothing here: the user event goes to all of theirs.
    assert handler.calls == [("room_created", "random", 7), ("user_event", 9, unread, NO_CONN)]
    assert bus.received == 2 and bus.dropped == 0

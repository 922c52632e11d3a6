"""What the event stream looks like in Redis: keys, partitions, and one event's fields.

Rooms map to `partitions` streams, `{ns}:{evP}:events` (P = crc32(room) % partitions, the hash
tag `{evP}` keeps each stream in one cluster slot, and spreads the partitions over slots). A
room's events are all in its partition's stream, in the order they were appended. Each entry
has the fields `type`, `room`, `seq` (so a consumer dedupes without parsing JSON) and `event`,
the JSON document docs/events.md specifies.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from protocol import Message

MESSAGE_CREATED = "MESSAGE_CREATED"


class MessageCreated(msgspec.Struct, frozen=True, kw_only=True):
    """The `event` field of a MESSAGE_CREATED entry (docs/events.md has its JSON Schema)."""

    type: str = MESSAGE_CREATED
    id: int
    room: str
    seq: int
    user: str
    text: str
    client_id: str | None
    ts: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(MessageCreated)


def partition_of(room: str, partitions: int) -> int:
    return zlib.crc32(room.encode()) % partitions


def stream_key(namespace: str, partition: int) -> str:
    return f"{namespace}:{{ev{partition}}}:events"


def stream_keys(namespace: str, partitions: int) -> list[str]:
    return [stream_key(namespace, p) for p in range(partitions)]


def entry_fields(message: Message) -> dict[bytes, bytes]:
    """The stream entry of a committed message."""
    event = MessageCreated(
        id=message.id,
        room=message.room,
        seq=message.seq,
        user=message.user,
        text=message.text,
        client_id=message.client_id,
        ts=message.ts,
    )
    return {
        b"type": MESSAGE_CREATED.encode(),
        b"room": message.room.encode(),
        b"seq": b"%d" % message.seq,
        b"event": _encoder.encode(event),
    }


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One entry read back: where it is (stream key, entry id) and what it says."""

    stream: str
    entry_id: str
    event: MessageCreated
    raw: bytes  # the `event` field as stored: what `hibiki events tail` prints


def decode_entry(stream: str, entry_id: str, fields: Mapping[bytes, bytes]) -> StreamEvent:
    raw = fields[b"event"]
    return StreamEvent(stream, entry_id, _decoder.decode(raw), raw)


class Deduper:
    """At least once means repeats: a consumer keeps the events of one room whose seq is new.

    Seqs are gap-free per room, so the last seq seen per room is all it needs; an event with a
    seq at or below it was seen before (a re-append after a crash or a Redis failure)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def fresh(self, event: MessageCreated) -> bool:
        if event.seq <= self._last.get(event.room, 0):
            return False
        self._last[event.room] = event.seq
        return True

"""Redis Cluster key slots: which of the 16384 slots a key or channel lives in.

A cluster hashes only the key's hash tag (the text between the first `{` and the next `}`, when
that is non-empty) with CRC16/XMODEM, so keys sharing a tag share a slot and a multi-key command
over them is allowed. The Redis Cluster specification gives the algorithm; `CLUSTER KEYSLOT`
answers the same (tests/redis/test_cluster_slots.py checks the two agree).
"""

from __future__ import annotations

SLOTS = 16384


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16/XMODEM (polynomial 0x1021, initial 0): the cluster's key hash."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def hash_tag(key: bytes) -> bytes:
    """The part of `key` the cluster hashes: its non-empty `{tag}`, else the whole key."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: bytes | str) -> int:
    """The slot of a key or sharded channel, as `CLUSTER KEYSLOT` computes it."""
    data = key.encode() if isinstance(key, str) else key
    return crc16(hash_tag(data)) % SLOTS

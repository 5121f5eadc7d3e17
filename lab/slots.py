"""Redis Cluster key slots: CRC16 (XMODEM) of the key, or of its hash tag, mod 16384."""

from __future__ import annotations

SLOT_COUNT = 16384


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _table()


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFF00) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def hash_tag(key: bytes) -> bytes:
    """The part of the key that is hashed: the first non-empty {...} section, if any."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str | bytes) -> int:
    raw = key.encode() if isinstance(key, str) else key
    return crc16(hash_tag(raw)) % SLOT_COUNT


def split_even(shards: int) -> list[tuple[int, int]]:
    """The ranges `redis-cli --cluster create` assigns to `shards` masters."""
    per = SLOT_COUNT / shards
    ranges = []
    first, cursor = 0, 0.0
    for index in range(shards):
        last = SLOT_COUNT - 1 if index == shards - 1 else round(cursor + per - 1)
        last = max(last, first)
        ranges.append((first, last))
        first, cursor = last + 1, cursor + per
    return ranges
